//! AWS errors and their envelope in each protocol, as botocore parses them.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::catalog::Protocol;
use crate::xml::Xml;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsError {
    pub status: StatusCode,
    /// The error code clients match on, e.g. `InvalidAction`.
    pub code: String,
    pub message: String,
    /// For query-compatible JSON services: the code the query protocol used, if it differs.
    pub query_code: Option<String>,
    /// Further members of a JSON error body (DynamoDB's `Item`, `CancellationReasons`).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl AwsError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError {
            status,
            code: code.into(),
            message: message.into(),
            query_code: None,
            fields: serde_json::Map::new(),
        }
    }

    /// A 400: the caller's fault.
    pub fn sender(code: impl Into<String>, message: impl Into<String>) -> Self {
        AwsError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn fault(&self) -> &'static str {
        if self.status.is_server_error() { "Receiver" } else { "Sender" }
    }
}

/// How one request's errors must be encoded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Envelope {
    pub protocol: Protocol,
    pub xml_namespace: &'static str,
    /// The request's JSON content type, echoed back.
    pub json_content_type: &'static str,
    /// A query-compatible JSON service: errors carry the query protocol's code in
    /// `x-amzn-query-error`.
    pub query_compatible: bool,
    /// Query errors end with an empty `<Detail/>` (SQS's do).
    pub query_detail: bool,
}

pub(crate) fn encode(envelope: Envelope, error: &AwsError, request_id: &str) -> Response<Bytes> {
    let (content_type, body) = match envelope.protocol {
        Protocol::Json => {
            let mut body = serde_json::json!({ "__type": error.code, "message": error.message });
            if let Some(body) = body.as_object_mut() {
                body.extend(error.fields.clone());
            }
            (envelope.json_content_type, body.to_string())
        }
        Protocol::RestJson => ("application/json", serde_json::json!({ "message": error.message }).to_string()),
        Protocol::Query => {
            let mut xml = Xml::document();
            xml.open_ns("ErrorResponse", envelope.xml_namespace);
            xml.open("Error");
            xml.leaf("Type", error.fault());
            // Query clients know a service by the codes it had in the query protocol.
            xml.leaf("Code", error.query_code.as_deref().unwrap_or(&error.code));
            xml.leaf("Message", &error.message);
            if envelope.query_detail {
                xml.leaf("Detail", "");
            }
            xml.close("Error");
            xml.leaf("RequestId", request_id);
            xml.close("ErrorResponse");
            ("text/xml", xml.finish())
        }
        Protocol::Ec2 => {
            let mut xml = Xml::document();
            xml.open("Response");
            xml.open("Errors");
            xml.open("Error");
            xml.leaf("Code", &error.code);
            xml.leaf("Message", &error.message);
            xml.close("Error");
            xml.close("Errors");
            xml.leaf("RequestID", request_id);
            xml.close("Response");
            ("text/xml", xml.finish())
        }
        Protocol::RestXml => {
            let mut xml = Xml::document();
            xml.open("Error");
            xml.leaf("Code", &error.code);
            xml.leaf("Message", &error.message);
            xml.leaf("RequestId", request_id);
            xml.close("Error");
            ("application/xml", xml.finish())
        }
        Protocol::RpcV2Cbor => {
            let mut response = respond(error.status, "application/cbor", cbor_error(error), request_id);
            response.headers_mut().insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
            return response;
        }
    };
    let mut response = respond(error.status, content_type, body.into(), request_id);
    let headers = response.headers_mut();
    if matches!(envelope.protocol, Protocol::RestJson | Protocol::Json)
        && let Ok(code) = HeaderValue::from_str(&error.code)
    {
        headers.insert("x-amzn-errortype", code);
    }
    if envelope.query_compatible {
        let code = error.query_code.as_deref().unwrap_or(&error.code);
        if let Ok(value) = HeaderValue::from_str(&format!("{code};{}", error.fault())) {
            headers.insert("x-amzn-query-error", value);
        }
    }
    response
}

pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    request_id: &str,
) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// `{"__type": code, "message": message}` in CBOR. Hand-written: a two-entry map of text strings
/// is all an error needs, and no other part of Stratus speaks CBOR yet.
fn cbor_error(error: &AwsError) -> Bytes {
    fn text(out: &mut Vec<u8>, s: &str) {
        let len = s.len();
        match len {
            0..24 => out.push(0x60 | len as u8),
            24..=0xff => out.extend([0x78, len as u8]),
            0x100..=0xffff => {
                out.push(0x79);
                out.extend((len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x7a);
                out.extend((len as u32).to_be_bytes());
            }
        }
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = vec![0xa2]; // map of two pairs
    for s in ["__type", &error.code, "message", &error.message] {
        text(&mut out, s);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(protocol: Protocol) -> Envelope {
        Envelope {
            protocol,
            xml_namespace: "https://sts.amazonaws.com/doc/2011-06-15/",
            json_content_type: "application/x-amz-json-1.0",
            query_compatible: false,
            query_detail: false,
        }
    }

    fn body(r: &Response<Bytes>) -> String {
        String::from_utf8(r.body().to_vec()).unwrap()
    }

    #[test]
    fn query_error_envelope() {
        let error = AwsError::sender("InvalidAction", "no <such> action");
        let r = encode(envelope(Protocol::Query), &error, "req-1");
        assert_eq!(r.status(), 400);
        assert_eq!(
            body(&r),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>no &lt;such&gt; action</Message></Error><RequestId>req-1</RequestId></ErrorResponse>"
        );
        assert_eq!(r.headers()["x-amzn-requestid"], "req-1");
    }

    #[test]
    fn json_error_carries_query_code_when_query_compatible() {
        let mut error = AwsError::sender("com.amazonaws.sqs#QueueDoesNotExist", "gone");
        error.query_code = Some("AWS.SimpleQueueService.NonExistentQueue".into());
        let r = encode(Envelope { query_compatible: true, ..envelope(Protocol::Json) }, &error, "id");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(r.body()).unwrap()["__type"],
            "com.amazonaws.sqs#QueueDoesNotExist"
        );
        assert_eq!(r.headers()["x-amzn-query-error"], "AWS.SimpleQueueService.NonExistentQueue;Sender");
        assert_eq!(r.headers()["content-type"], "application/x-amz-json-1.0");
    }

    #[test]
    fn cbor_error_is_a_two_entry_text_map() {
        let error = AwsError::sender("X", &*"m".repeat(30));
        let r = encode(envelope(Protocol::RpcV2Cbor), &error, "id");
        let b = r.body();
        assert_eq!(&b[..9], &[0xa2, 0x66, b'_', b'_', b't', b'y', b'p', b'e', 0x61]);
        assert_eq!(&b[b.len() - 32..b.len() - 30], &[0x78, 30]);
    }
}
