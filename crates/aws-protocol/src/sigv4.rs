//! Who signed a request, for what region and service: read from the SigV4 credential scope.
//!
//! Signatures are not verified (LocalStack and moto do not either): Stratus is a local cloud, and
//! clients configured with any access key must work. The scope is still what AWS uses to route.

use http::HeaderMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub access_key: String,
    pub region: Option<String>,
    pub service: String,
}

/// The credential scope from the `Authorization` header, or from a presigned URL's
/// `X-Amz-Credential` parameter.
pub fn scope(headers: &HeaderMap, query: Option<&str>) -> Option<Scope> {
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let credential = auth.split([' ', ',']).find_map(|part| part.trim().strip_prefix("Credential="))?;
        return parse_credential(credential);
    }
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Credential"))
        .and_then(|(_, credential)| parse_credential(&credential))
}

/// `AKID/20240101/us-east-1/sqs/aws4_request` (SigV4) or `AKID/20240101/sqs/aws4_request` (SigV4A,
/// whose region set travels in another header).
fn parse_credential(credential: &str) -> Option<Scope> {
    let parts: Vec<&str> = credential.split('/').collect();
    let (access_key, region, service) = match parts.as_slice() {
        [key, _date, region, service, "aws4_request"] => (key, Some(region.to_string()), service),
        [key, _date, service, "aws4_request"] => (key, None, service),
        _ => return None,
    };
    Some(Scope { access_key: access_key.to_string(), region, service: service.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn reads_header_and_presigned_scopes() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/eu-west-1/sqs/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";
        let scope = scope(&headers(auth), None).unwrap();
        assert_eq!(
            (scope.access_key.as_str(), scope.region.as_deref(), scope.service.as_str()),
            ("AKIDEXAMPLE", Some("eu-west-1"), "sqs")
        );

        let presigned = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=123456789012%2F20240101%2Fus-east-2%2Fs3%2Faws4_request&X-Amz-Signature=x";
        let scope = super::scope(&HeaderMap::new(), Some(presigned)).unwrap();
        assert_eq!(
            (scope.access_key.as_str(), scope.region.as_deref(), scope.service.as_str()),
            ("123456789012", Some("us-east-2"), "s3")
        );

        let v4a = "AWS4-ECDSA-P256-SHA256 Credential=AKID/20240101/sts/aws4_request, SignedHeaders=host, Signature=abc";
        assert_eq!(super::scope(&headers(v4a), None).unwrap().region, None);
    }

    #[test]
    fn malformed_scopes_are_none() {
        for auth in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=",
            "AWS4-HMAC-SHA256 Credential=a/b/c",
            "AWS AKID:sig",
            "Credential=////",
        ] {
            assert_eq!(scope(&headers(auth), None), None, "{auth:?}");
        }
        assert_eq!(scope(&HeaderMap::new(), Some("X-Amz-Credential=%FF%FE")), None);
    }
}
