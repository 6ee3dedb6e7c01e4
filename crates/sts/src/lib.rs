//! AWS STS, the domain side: who is calling.
//!
//! Stratus does not verify signatures, so a caller is whoever its access key says: the account that
//! the edge derived from the key, acting as that account's root user (what AWS reports for root
//! credentials). Temporary credentials (AssumeRole, GetSessionToken) will live here too.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
    pub user_id: String,
}

/// The identity of an account's root user, as `GetCallerIdentity` reports it.
pub fn caller_identity(account: &str) -> CallerIdentity {
    CallerIdentity {
        account: account.to_string(),
        arn: format!("arn:aws:iam::{account}:root"),
        user_id: account.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_identity() {
        let id = super::caller_identity("123456789012");
        assert_eq!(id.arn, "arn:aws:iam::123456789012:root");
        assert_eq!(id.user_id, "123456789012");
    }
}
