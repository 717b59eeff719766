# Secrets the cluster reads through the External Secrets Operator (deploy/k8s/overlays/aws).
# The database password is not here: RDS manages and rotates it (aws_db_instance.main).
resource "random_password" "kafka" {
  length  = 40
  special = false
}

resource "random_password" "serving_token" {
  length  = 48
  special = false
}

# MSK reads SCRAM users only from secrets named AmazonMSK_* and encrypted with a customer key.
resource "aws_secretsmanager_secret" "kafka" {
  #checkov:skip=CKV2_AWS_57:MSK SCRAM users have no rotation function; rotate by tainting random_password.kafka and applying (docs/production.md)
  name                    = "AmazonMSK_${local.name}"
  description             = "MSK SASL/SCRAM user for EventOps"
  kms_key_id              = aws_kms_key.platform.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "kafka" {
  secret_id = aws_secretsmanager_secret.kafka.id
  secret_string = jsonencode({
    username = "eventops"
    password = random_password.kafka.result
  })
}

resource "aws_secretsmanager_secret" "serving_token" {
  #checkov:skip=CKV2_AWS_57:a bearer token shared by clients and servers; rotate by tainting random_password.serving_token and applying (docs/production.md)
  name                    = "${local.name}/serving-token"
  description             = "Bearer token the model servers require on /feedback"
  kms_key_id              = aws_kms_key.platform.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "serving_token" {
  secret_id     = aws_secretsmanager_secret.serving_token.id
  secret_string = random_password.serving_token.result
}

# Alert channels' webhook URLs and signing secrets, as one JSON object whose keys are the
# variables the channels read (SLACK_WEBHOOK_URL, ...). Created empty; fill it in the console
# or with `aws secretsmanager put-secret-value`; Terraform leaves the value alone.
resource "aws_secretsmanager_secret" "alerts" {
  #checkov:skip=CKV2_AWS_57:webhook URLs are issued by the receiving service; rotate them there, then put the new value
  name                    = "${local.name}/alerts"
  description             = "EventOps alert channels (JSON: variable name -> value)"
  kms_key_id              = aws_kms_key.platform.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "alerts" {
  secret_id     = aws_secretsmanager_secret.alerts.id
  secret_string = jsonencode({})

  lifecycle {
    ignore_changes = [secret_string]
  }
}
