//! The AWS SDK configuration shared by the s3 backend and the EFS control plane: the usual AWS
//! environment (aws-config's chain: env vars, profiles, SSO-free credential processes, instance
//! roles), rustls on ring for TLS (no C crypto build), our own timeouts, and no SDK retries
//! ([`super::retry`] is the one retry layer).

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, RequestChecksumCalculation, ResponseChecksumValidation, retry::RetryConfig,
    timeout::TimeoutConfig,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to the first byte of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// One attempt of one operation (a part or a whole small object).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(600);

/// Settings that replace what the environment would say (tests, and callers that know better).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Access key id and secret access key.
    pub credentials: Option<(String, String)>,
}

/// Loads the configuration from the environment (may read profile files, and ask the instance
/// metadata service for a region or credentials on EC2).
pub async fn sdk_config() -> SdkConfig {
    sdk_config_with(&Overrides::default()).await
}

/// [`sdk_config`], with `o` taking precedence over the environment.
pub async fn sdk_config_with(o: &Overrides) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    // S3-compatible servers often reject the SDK's default CRC trailers; send checksums only
    // where S3 requires them unless the user chose otherwise.
    if std::env::var_os("AWS_REQUEST_CHECKSUM_CALCULATION").is_none() {
        loader = loader.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    }
    if std::env::var_os("AWS_RESPONSE_CHECKSUM_VALIDATION").is_none() {
        loader = loader.response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    if let Some(e) = &o.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    if let Some(r) = &o.region {
        loader = loader.region(aws_sdk_s3::config::Region::new(r.clone()));
    }
    if let Some((id, secret)) = &o.credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            id,
            secret,
            None,
            None,
            "prism-sync overrides",
        ));
    }
    loader.load().await
}
