//! Pod spec defaulting and validation shared by Pods and every pod template (Deployments,
//! ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs).
