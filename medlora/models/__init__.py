"""timm backbones identified by content, and peft LoRA on their attention."""
