//! The query protocol: `Action` and parameters from the query string or a form body; XML replies.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::Context;
use crate::catalog::ServiceModel;
use crate::error::{AwsError, respond as raw_response};
use crate::xml::Xml;

pub(crate) struct QueryRequest {
    pub service: &'static ServiceModel,
    pub action: String,
    /// Every parameter but `Action`, in request order.
    pub params: Vec<(String, String)>,
}

impl QueryRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The indices N used under `prefix.N`, in numeric order.
    pub fn indices(&self, prefix: &str) -> Vec<u32> {
        let mut indices: Vec<u32> = self
            .params
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(prefix)?.strip_prefix('.')?.split('.').next()?.parse().ok())
            .collect();
        indices.sort_unstable();
        indices.dedup();
        indices
    }

    /// A list: `Name.member.N`.
    pub fn list(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}.member");
        let items = self.indices(&prefix).into_iter().filter_map(|i| self.param(&format!("{prefix}.{i}")));
        items.map(String::from).collect()
    }

    /// A map: `Name.entry.N.key` and `Name.entry.N.value`.
    pub fn map(&self, name: &str) -> BTreeMap<String, String> {
        let prefix = format!("{name}.entry");
        self.indices(&prefix)
            .into_iter()
            .filter_map(|i| {
                let key = self.param(&format!("{prefix}.{i}.key"))?;
                let value = self.param(&format!("{prefix}.{i}.value")).unwrap_or_default();
                Some((key.to_string(), value.to_string()))
            })
            .collect()
    }
}

/// `<{Action}Response><{Action}Result>...</{Action}Result><ResponseMetadata>...` as AWS wraps
/// every query result.
pub(crate) fn respond(ctx: &Context, request: &QueryRequest, result: impl FnOnce(&mut Xml)) -> Response<Bytes> {
    let action = request.action.as_str();
    let mut xml = Xml::document();
    xml.open_ns(&format!("{action}Response"), request.service.xml_namespace);
    xml.open(&format!("{action}Result"));
    result(&mut xml);
    xml.close(&format!("{action}Result"));
    xml.open("ResponseMetadata");
    xml.leaf("RequestId", &ctx.request_id);
    xml.close("ResponseMetadata");
    xml.close(&format!("{action}Response"));
    raw_response(StatusCode::OK, "text/xml", xml.finish().into(), &ctx.request_id)
}

pub(crate) fn invalid_action(request: &QueryRequest) -> AwsError {
    let version = request.param("Version").unwrap_or(request.service.api_version);
    AwsError::sender("InvalidAction", format!("Could not find operation {} for version {version}", request.action))
}
