//! Every AWS service botocore knows, with what routing and error encoding need to know of it.

#[rustfmt::skip] // generated, one service per line
mod services;

use std::collections::HashMap;
use std::sync::LazyLock;

use services::SERVICES;

/// The wire protocol families AWS services speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// awsJson 1.0/1.1: `POST /` with `X-Amz-Target: Prefix.Operation`.
    Json,
    /// awsQuery: `Action=...&Version=...` form parameters, XML responses.
    Query,
    /// The EC2 dialect of query, with its own error envelope.
    Ec2,
    RestJson,
    RestXml,
    /// Smithy RPC v2 CBOR: `POST /service/<Service>/operation/<Operation>`.
    RpcV2Cbor,
}

#[derive(Debug)]
pub struct ServiceModel {
    /// botocore's name for the service, e.g. `sqs`, `lexv2-runtime`.
    pub name: &'static str,
    /// The service in a SigV4 credential scope.
    pub signing_name: &'static str,
    /// The protocol current SDKs send.
    pub protocol: Protocol,
    /// For JSON services, the part of `X-Amz-Target` before the dot.
    pub target_prefix: &'static str,
    pub api_version: &'static str,
    pub xml_namespace: &'static str,
    /// JSON services that still report their old query error codes in `x-amzn-query-error`.
    pub query_compatible: bool,
    /// Every protocol the model lists.
    pub protocols: &'static [Protocol],
}

/// Looked up for every JSON-protocol request; a scan of the 424 services was ~1.7% of the CPU
/// of an SQS send.
pub fn by_target_prefix(prefix: &str) -> Option<&'static ServiceModel> {
    static BY_PREFIX: LazyLock<HashMap<&str, &ServiceModel>> = LazyLock::new(|| {
        let mut map = HashMap::new();
        for service in SERVICES.iter().filter(|s| !s.target_prefix.is_empty()) {
            map.entry(service.target_prefix).or_insert(service);
        }
        map
    });
    BY_PREFIX.get(prefix).copied()
}

/// Several services share a signing name (`dynamodb` signs DynamoDB Streams too); `speaks` picks
/// among them, preferring the one whose botocore name is the signing name.
pub fn by_signing_name(signing_name: &str, speaks: impl Fn(&ServiceModel) -> bool) -> Option<&'static ServiceModel> {
    let mut candidates = SERVICES.iter().filter(|s| s.signing_name == signing_name && speaks(s));
    let first = candidates.next()?;
    Some(std::iter::once(first).chain(candidates).find(|s| s.name == signing_name).unwrap_or(first))
}

/// The query-protocol service with this `Version` parameter, if exactly one has it.
pub fn by_query_version(version: &str) -> Option<&'static ServiceModel> {
    let mut matches = SERVICES.iter().filter(|s| s.api_version == version && s.accepts_query());
    let only = matches.next()?;
    matches.next().is_none().then_some(only)
}

impl ServiceModel {
    /// Services that speak a query protocol, or spoke it before moving to JSON (the query-
    /// compatible ones, such as SQS, whose older SDKs still send it).
    pub fn accepts_query(&self) -> bool {
        self.query_compatible || self.protocols.iter().any(|p| matches!(p, Protocol::Query | Protocol::Ec2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(by_target_prefix("AmazonSQS").map(|s| s.name), Some("sqs"));
        assert_eq!(by_target_prefix("DynamoDBStreams_20120810").map(|s| s.name), Some("dynamodbstreams"));
        assert_eq!(by_signing_name("dynamodb", |_| true).map(|s| s.name), Some("dynamodb"));
        assert_eq!(by_signing_name("sts", ServiceModel::accepts_query).map(|s| s.name), Some("sts"));
        assert_eq!(by_query_version("2011-06-15").map(|s| s.name), Some("sts"));
        assert_eq!(by_query_version("2012-11-05").map(|s| s.name), Some("sqs"));
        assert_eq!(by_signing_name("s3", |_| true).map(|s| s.protocol), Some(Protocol::RestXml));
        assert!(by_target_prefix("").is_none());
    }
}
