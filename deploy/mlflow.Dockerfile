# The MLflow server with the PostgreSQL driver and the S3 client it needs.
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow==3.17.2" "psycopg[binary]>=3.1" "boto3>=1.28"
EXPOSE 5000
