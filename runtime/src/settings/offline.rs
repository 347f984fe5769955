//! The `offline_store` section: how Quiver reaches offline data kept in object storage.

use serde::Deserialize;

use super::HumanDuration;

/// The `offline_store` section. Local paths need none of it; `s3://` URLs use the `s3`
/// subsection, the standard AWS environment variables and the shared config and credentials
/// files (see `docs/configuration.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineStoreSettings {
    /// How `s3://` URLs are reached.
    pub s3: S3Settings,
    /// Requests in flight at once, per bucket.
    pub max_concurrent_requests: usize,
    /// Retries of a failed request (with exponential backoff) before it fails.
    pub max_retries: usize,
    /// Longest time a request is retried for.
    pub retry_timeout: HumanDuration,
    /// Longest time one request may take.
    pub request_timeout: HumanDuration,
    /// Longest time connecting may take.
    pub connect_timeout: HumanDuration,
}

impl Default for OfflineStoreSettings {
    fn default() -> Self {
        OfflineStoreSettings {
            s3: S3Settings::default(),
            max_concurrent_requests: 16,
            max_retries: 5,
            retry_timeout: HumanDuration::parse("3m").expect("valid"),
            request_timeout: HumanDuration::parse("5m").expect("valid"),
            connect_timeout: HumanDuration::parse("5s").expect("valid"),
        }
    }
}

/// `offline_store.s3`: overrides of what the AWS environment says. Credentials are never
/// written here: they come from the environment, the shared credentials file or the instance's
/// role, as for every AWS tool.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// The region; default: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, then
    /// `us-east-1`.
    pub region: Option<String>,
    /// The endpoint of an S3-compatible store (MinIO, Ceph, R2, ...); default:
    /// `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, the profile's `endpoint_url`, then AWS.
    pub endpoint: Option<String>,
    /// Address buckets as `<endpoint>/<bucket>` (path style, the default, which every
    /// S3-compatible store accepts) or, when false, as `<bucket>.<endpoint>` (virtual-hosted).
    pub path_style: Option<bool>,
    /// The profile of the shared config and credentials files; default: `AWS_PROFILE`, then
    /// `default`.
    pub profile: Option<String>,
}
