"""The AWS EC2 driver (boto3): config schema and models, adapter, state machines."""
