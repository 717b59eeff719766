variable "name" {
  description = "Prefix of every resource's name."
  type        = string
  default     = "eventops"
}

variable "environment" {
  description = "Environment name (also the Kustomize overlay's folder name)."
  type        = string
  default     = "prod"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.environment))
    error_message = "environment: lower-case letters, digits and '-', 2 to 21 characters."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "availability_zones" {
  description = "Three zones of the region for the subnets, EKS nodes, MSK brokers and RDS."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

  validation {
    condition     = length(var.availability_zones) == 3
    error_message = "availability_zones: exactly three zones (MSK's three brokers, one per zone)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "vpc_cidr" {
  description = "The VPC's address range; private subnets take the first three /19s."
  type        = string
  default     = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, one zone's outage cuts egress) instead of one per zone."
  type        = bool
  default     = false
}

variable "kubernetes_version" {
  description = "EKS control plane version."
  type        = string
  default     = "1.33"
}

variable "cluster_endpoint_public_cidrs" {
  description = "CIDRs allowed to reach the EKS API endpoint publicly; empty keeps the endpoint private (reach it through a VPN or bastion)."
  type        = list(string)
  default     = []
}

variable "node_instance_types" {
  description = "Instance types of the general node group."
  type        = list(string)
  default     = ["m7i.xlarge"]
}

variable "node_min_size" {
  type    = number
  default = 3
}

variable "node_max_size" {
  type    = number
  default = 12
}

variable "node_desired_size" {
  type    = number
  default = 3
}

variable "kubernetes_namespaces" {
  description = "Namespaces whose EventOps service accounts may assume the IAM roles (the platform's and each project's, e.g. eventops-churn)."
  type        = list(string)
  default     = ["eventops"]
}

variable "kafka_version" {
  type    = string
  default = "3.8.x"
}

variable "kafka_instance_type" {
  type    = string
  default = "kafka.m7g.large"
}

variable "kafka_volume_size_gb" {
  type    = number
  default = 500
}

variable "db_instance_class" {
  type    = string
  default = "db.m7g.large"
}

variable "db_engine_version" {
  type    = string
  default = "17"
}

variable "db_allocated_storage_gb" {
  type    = number
  default = 100
}

variable "db_max_allocated_storage_gb" {
  type    = number
  default = 1000
}

variable "db_backup_retention_days" {
  type    = number
  default = 14
}

variable "log_retention_days" {
  description = "Retention of the VPC flow logs and the EKS, MSK and RDS logs."
  type        = number
  default     = 365
}

variable "lake_noncurrent_days" {
  description = "Days a replaced or deleted object version of the lake and artifact buckets is kept (the window to undo a mistake)."
  type        = number
  default     = 30
}

# ---- AWS-native integrations (docs/aws.md) ----------------------------------------------

variable "kinesis_ingest_shards" {
  description = "Shards of the ingest stream; 0 for on-demand capacity."
  type        = number
  default     = 0
}

variable "kinesis_retention_hours" {
  description = "How long the Kinesis streams keep records (24 to 8760 hours)."
  type        = number
  default     = 24
}

variable "forward_events_to_kinesis" {
  description = "Create a Kinesis stream for the platform's events (EVENTOPS_AWS_KINESIS_STREAM)."
  type        = bool
  default     = false
}

variable "eventbridge_archive_days" {
  description = "Days the platform bus's archive keeps events for replay."
  type        = number
  default     = 30
}

variable "api_base_url" {
  description = "HTTPS address of the EventOps API that EventBridge delivers to, e.g. https://eventops.example.com."
  type        = string
  default     = "https://eventops.invalid"
  validation {
    condition     = startswith(var.api_base_url, "https://")
    error_message = "EventBridge API destinations need an https:// address."
  }
}

variable "eventbridge_api_token" {
  description = "An EventOps operator token for EventBridge's deliveries (eventops tokens create eventbridge --role operator); null until the platform runs: no inbound EventBridge then."
  type        = string
  sensitive   = true
  default     = null
}

variable "eventbridge_pipeline_rules" {
  description = "Pipeline name => EventBridge event pattern (JSON) whose events start it."
  type        = map(string)
  default     = {}
}

variable "cloudwatch_namespace" {
  description = "CloudWatch namespace of the serving and monitoring metrics (EVENTOPS_AWS_CLOUDWATCH_NAMESPACE)."
  type        = string
  default     = "EventOps"
}

variable "monitored_deployments" {
  description = "Deployments that get error and latency alarms and dashboard widgets."
  type        = list(string)
  default     = []
}

variable "drift_monitors" {
  description = "Monitors that get a drift alarm and a dashboard widget."
  type        = list(string)
  default     = []
}

variable "alarm_errors_threshold" {
  description = "Errors of one deployment in 5 minutes above which its alarm fires."
  type        = number
  default     = 5
}

variable "alarm_latency_threshold" {
  description = "p95 latency (ms) of one deployment above which its alarm fires."
  type        = number
  default     = 250
}

variable "alarm_drift_share" {
  description = "Share of drifted features at which a monitor's alarm fires."
  type        = number
  default     = 0.3
}

variable "sagemaker_name_prefix" {
  description = "Prefix of every SageMaker resource EventOps creates (endpoint names start with it)."
  type        = string
  default     = "eventops-"
}

variable "sagemaker_instance_type" {
  description = "Instance type of SageMaker endpoints (EVENTOPS_AWS_SAGEMAKER_INSTANCE_TYPE)."
  type        = string
  default     = "ml.m5.large"
}
