"""Speed and memory benchmarks of medlora against a naive timm + peft loop (see README.md)."""
