//! HostConfig's security fields (`Privileged`, `CapAdd`, `CapDrop`, `ReadonlyRootfs`,
//! `SecurityOpt`) and Docker's seccomp profile JSON, which the CLI reads from the file named in
//! `--security-opt seccomp=<file>` and sends inline.

use containers::Error;
use containers::seccomp::{Arg, Filter, Profile, Rule};
use containers::security::{Seccomp, Security};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct SecurityBody {
    privileged: Option<bool>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    readonly_rootfs: Option<bool>,
    security_opt: Option<Vec<String>>,
    userns_mode: Option<String>,
}

impl SecurityBody {
    pub(crate) fn settings(&self) -> Result<Security, Error> {
        let mut security = Security {
            privileged: self.privileged.unwrap_or(false),
            cap_add: self.cap_add.clone().unwrap_or_default(),
            cap_drop: self.cap_drop.clone().unwrap_or_default(),
            read_only_rootfs: self.readonly_rootfs.unwrap_or(false),
            host_userns: match self.userns_mode.as_deref().unwrap_or_default() {
                "" => false,
                "host" => true,
                other => return Err(Error::InvalidParameter(format!("invalid USER mode: {other}"))),
            },
            ..Security::default()
        };
        for option in self.security_opt.iter().flatten() {
            apply_option(&mut security, option)?;
        }
        Ok(security)
    }
}

/// `HostConfig.SecurityOpt` as inspect shows it.
pub(crate) fn options(security: &Security) -> Vec<&'static str> {
    let mut options = Vec::new();
    if security.no_new_privileges {
        options.push("no-new-privileges");
    }
    match security.seccomp {
        Seccomp::Default => {}
        Seccomp::Unconfined => options.push("seccomp=unconfined"),
        // The profile's JSON is not kept, only what it means.
        Seccomp::Custom(_) => options.push("seccomp=custom"),
    }
    options
}

/// One `--security-opt`, parsed as dockerd does: `key=value` (or the deprecated `key:value`).
fn apply_option(security: &mut Security, option: &str) -> Result<(), Error> {
    if option == "no-new-privileges" {
        security.no_new_privileges = true;
        return Ok(());
    }
    let Some((key, value)) = option.split_once('=').or_else(|| option.split_once(':')) else {
        return Err(Error::InvalidParameter(format!("invalid --security-opt 1: {option:?}")));
    };
    match key {
        "no-new-privileges" => {
            security.no_new_privileges = match value {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
                "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
                _ => return Err(Error::InvalidParameter(format!("invalid --security-opt 2: {option:?}"))),
            }
        }
        "seccomp" => {
            security.seccomp = match value {
                "unconfined" => Seccomp::Unconfined,
                "builtin" | "" => Seccomp::Default,
                json => Seccomp::Custom(profile(json)?),
            }
        }
        // Labels are SELinux's, which this host does not run; dockerd ignores them then too.
        "label" => {}
        "apparmor" if value == "unconfined" => {}
        "apparmor" => return Err(Error::Unsupported("AppArmor profiles")),
        _ => return Err(Error::InvalidParameter(format!("invalid --security-opt 2: {option:?}"))),
    }
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ProfileJson {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    arch_map: Option<Vec<ArchMapJson>>,
    syscalls: Vec<SyscallJson>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ArchMapJson {
    architecture: String,
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SyscallJson {
    /// The old, single-name form.
    name: Option<String>,
    names: Option<Vec<String>>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<ArgJson>>,
    includes: FilterJson,
    excludes: FilterJson,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ArgJson {
    index: u32,
    value: u64,
    value_two: u64,
    op: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct FilterJson {
    caps: Option<Vec<String>>,
    arches: Option<Vec<String>>,
    min_kernel: Option<String>,
}

impl From<FilterJson> for Filter {
    fn from(f: FilterJson) -> Filter {
        Filter { caps: f.caps.unwrap_or_default(), arches: f.arches.unwrap_or_default(), min_kernel: f.min_kernel }
    }
}

/// A seccomp profile in Docker's JSON format.
fn profile(json: &str) -> Result<Profile, Error> {
    let parsed: ProfileJson = serde_json::from_str(json)
        .map_err(|e| Error::InvalidParameter(format!("Decoding seccomp profile failed: {e}")))?;
    if parsed.architectures.as_ref().is_some_and(|a| !a.is_empty())
        && parsed.arch_map.as_ref().is_some_and(|a| !a.is_empty())
    {
        return Err(Error::InvalidParameter(
            "'architectures' and 'archMap' were specified in the seccomp profile, use either 'architectures' or 'archMap'"
                .into(),
        ));
    }
    let mut rules = Vec::new();
    for syscall in parsed.syscalls {
        let names = match (syscall.name, syscall.names) {
            (Some(name), None) => vec![name],
            (None, Some(names)) => names,
            (Some(_), Some(_)) => {
                return Err(Error::InvalidParameter(
                    "'name' and 'names' were specified in the seccomp profile, use either 'name' or 'names'".into(),
                ));
            }
            (None, None) => Vec::new(),
        };
        let args = syscall.args.unwrap_or_default();
        rules.push(Rule {
            names,
            action: syscall.action,
            errno: syscall.errno_ret,
            args: args
                .into_iter()
                .map(|a| Arg { index: a.index, value: a.value, value_two: a.value_two, op: a.op })
                .collect(),
            includes: syscall.includes.into(),
            excludes: syscall.excludes.into(),
        });
    }
    Ok(Profile {
        default_action: parsed.default_action,
        default_errno: parsed.default_errno_ret,
        architectures: parsed.architectures.unwrap_or_default(),
        arch_map: parsed
            .arch_map
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.architecture, a.sub_architectures.unwrap_or_default()))
            .collect(),
        rules,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(options: &[&str]) -> Result<Security, String> {
        let body =
            SecurityBody { security_opt: Some(options.iter().map(|o| o.to_string()).collect()), ..Default::default() };
        body.settings().map_err(|e| e.to_string())
    }

    #[test]
    fn security_options_parse_like_dockerd() {
        assert!(settings(&["no-new-privileges"]).unwrap().no_new_privileges);
        assert!(!settings(&["no-new-privileges=false"]).unwrap().no_new_privileges);
        assert!(settings(&["no-new-privileges:true"]).unwrap().no_new_privileges);
        assert_eq!(settings(&["seccomp=unconfined"]).unwrap().seccomp, Seccomp::Unconfined);
        assert_eq!(settings(&["label=disable"]).unwrap(), Security::default());
        assert_eq!(settings(&["bogus"]).unwrap_err(), "invalid --security-opt 1: \"bogus\"");
        assert_eq!(settings(&["foo=bar"]).unwrap_err(), "invalid --security-opt 2: \"foo=bar\"");
        assert!(settings(&["seccomp={"]).unwrap_err().starts_with("Decoding seccomp profile failed"));
    }

    #[test]
    fn seccomp_profiles_decode_from_dockers_json() {
        let json = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],
            "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW","comment":"io"},
                        {"name":"mkdir","action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":1,"value":448,"op":"SCMP_CMP_EQ"}],
                         "includes":{"caps":["CAP_SYS_ADMIN"],"minKernel":"4.8"},"excludes":{"arches":["s390x"]}}]}"#;
        let Seccomp::Custom(profile) = settings(&[&format!("seccomp={json}")]).unwrap().seccomp else { panic!() };
        assert_eq!(profile.default_errno, Some(1));
        assert_eq!(profile.arch_map, [("SCMP_ARCH_X86_64".to_string(), vec!["SCMP_ARCH_X86".to_string()])]);
        assert_eq!(profile.rules[0].names, ["read", "write"]);
        let mkdir = &profile.rules[1];
        assert_eq!((mkdir.names.clone(), mkdir.errno), (vec!["mkdir".to_string()], Some(13)));
        assert_eq!((mkdir.args[0].index, mkdir.args[0].value), (1, 448));
        assert_eq!(mkdir.includes.caps, ["CAP_SYS_ADMIN"]);
        assert_eq!(mkdir.excludes.arches, ["s390x"]);
        let both =
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ERRNO"}]}"#;
        assert!(settings(&[&format!("seccomp={both}")]).unwrap_err().contains("use either 'name' or 'names'"));
    }
}
