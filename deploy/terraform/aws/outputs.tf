output "cluster_name" {
  description = "aws eks update-kubeconfig --name <this> --region <region>"
  value       = aws_eks_cluster.main.name
}

output "cluster_endpoint" {
  value = aws_eks_cluster.main.endpoint
}

output "ecr_repository_url" {
  description = "Where the platform image goes: docker push <this>:<version>"
  value       = aws_ecr_repository.eventops.repository_url
}

output "lake_url" {
  value = "s3://${module.lake.bucket}/lake"
}

output "kafka_bootstrap_brokers" {
  value = aws_msk_cluster.main.bootstrap_brokers_sasl_scram
}

output "db_endpoint" {
  value = aws_db_instance.main.address
}

output "db_master_secret_arn" {
  description = "The RDS-managed secret holding the store's password"
  value       = aws_db_instance.main.master_user_secret[0].secret_arn
}

output "irsa_role_arns" {
  value = { for key, role in aws_iam_role.irsa : key => role.arn }
}

# Ready-made files for deploy/k8s/overlays/aws (see its kustomization.yaml).
output "kustomize_config_env" {
  description = "deploy/k8s/overlays/aws/config.env"
  value       = <<-ENV
    EVENTOPS_BUS_URL=kafka+ssl://${aws_msk_cluster.main.bootstrap_brokers_sasl_scram}?security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512&sasl_username=eventops&replication_factor=3&partitions=6
    EVENTOPS_STORE_URL=postgresql+psycopg://eventops@${aws_db_instance.main.address}:5432/eventops?sslmode=require
    EVENTOPS_LAKE_URL=s3://${module.lake.bucket}/lake
    EVENTOPS_TRACKING_URI=http://mlflow:5000
    AWS_REGION=${var.region}
    EVENTOPS_AWS_EVENTBRIDGE_BUS=${aws_cloudwatch_event_bus.platform.name}
    EVENTOPS_AWS_CLOUDWATCH_NAMESPACE=${var.cloudwatch_namespace}
    EVENTOPS_AWS_SAGEMAKER_ROLE_ARN=${aws_iam_role.sagemaker.arn}
    EVENTOPS_AWS_SAGEMAKER_BUCKET=s3://${module.artifacts.bucket}/sagemaker
    EVENTOPS_AWS_SAGEMAKER_INSTANCE_TYPE=${var.sagemaker_instance_type}
  ENV
}

output "kustomize_mlflow_env" {
  description = "deploy/k8s/overlays/aws/mlflow.env"
  value       = <<-ENV
    MLFLOW_BACKEND_STORE_URI=postgresql+psycopg://eventops@${aws_db_instance.main.address}:5432/mlflow?sslmode=require
    MLFLOW_ARTIFACTS_DESTINATION=s3://${module.artifacts.bucket}/mlflow
    AWS_REGION=${var.region}
  ENV
}

output "kustomize_aws_env" {
  description = "deploy/k8s/overlays/aws/aws.env"
  value       = <<-ENV
    AWS_REGION=${var.region}
    VPC_CIDR=${var.vpc_cidr}
    API_ROLE_ARN=${aws_iam_role.irsa["api"].arn}
    WORKER_ROLE_ARN=${aws_iam_role.irsa["worker"].arn}
    SERVE_ROLE_ARN=${aws_iam_role.irsa["serve"].arn}
    MLFLOW_ROLE_ARN=${aws_iam_role.irsa["mlflow"].arn}
    ESO_ROLE_ARN=${aws_iam_role.irsa["external-secrets"].arn}
    DB_CREDENTIALS_ARN=${aws_db_instance.main.master_user_secret[0].secret_arn}
    KAFKA_CREDENTIALS_NAME=${aws_secretsmanager_secret.kafka.name}
    SERVING_TOKEN_NAME=${aws_secretsmanager_secret.serving_token.name}
    ALERTS_CREDENTIALS_NAME=${aws_secretsmanager_secret.alerts.name}
  ENV
}

output "kinesis_ingest_stream" {
  description = "eventops ingest kinesis DATASET kinesis://<this>?region=<region>"
  value       = aws_kinesis_stream.ingest.name
}

output "kinesis_events_stream" {
  description = "EVENTOPS_AWS_KINESIS_STREAM, when forward_events_to_kinesis is on"
  value       = one(aws_kinesis_stream.events[*].name)
}

output "event_bus_name" {
  value = aws_cloudwatch_event_bus.platform.name
}

output "eventbridge_dead_letter_queue" {
  description = "Deliveries EventBridge could not make to the API land here"
  value       = aws_sqs_queue.eventbridge_dlq.url
}

output "sagemaker_role_arn" {
  value = aws_iam_role.sagemaker.arn
}
