//! STS over the query protocol.

use bytes::Bytes;
use http::Response;

use crate::Context;
use crate::error::AwsError;
use crate::query::{self, QueryRequest};

pub(crate) fn handle(ctx: &Context, request: &QueryRequest) -> Result<(&'static str, Response<Bytes>), AwsError> {
    match request.action.as_str() {
        "GetCallerIdentity" => {
            let identity = sts::caller_identity(&ctx.account);
            let response = query::respond(ctx, request, |xml| {
                xml.leaf("Arn", &identity.arn);
                xml.leaf("UserId", &identity.user_id);
                xml.leaf("Account", &identity.account);
            });
            Ok(("GetCallerIdentity", response))
        }
        _ => Err(query::invalid_action(request)),
    }
}
