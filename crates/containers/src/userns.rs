//! `--userns-remap`: containers get a user namespace in which their root is an unprivileged
//! host uid (the start of a subordinate range), so root in a container is not root on the host.
//!
//! The image layers stay as they are, owned by host root, shared by every container. Each start
//! mounts them *idmapped* (Linux 5.12+: `open_tree` + `mount_setattr(MOUNT_ATTR_IDMAP)`) with the
//! remap's user namespace, so inside the overlay a file the layer has as uid 0 appears as the
//! remapped root; overlayfs keeps private clones of its lower mounts, so the idmapped ones are
//! detached again right after the overlay is mounted. dockerd instead keeps a chowned copy of
//! every layer per remap; idmapped mounts cost nothing per layer and work on this host's ext4.
//! The writable layer is the remapped root's, so what a container writes is owned on the host
//! by the mapped ids.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, OpenTreeFlags, UnmountFlags};

use crate::error::{Error, Result};

/// Where the container's uids and gids start on the host, and how many there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remap {
    pub uid: u32,
    pub gid: u32,
    pub size: u32,
}

/// The range `default` uses when the host has no `dockremap` entries: dockerd would create that
/// user (and so its ranges) with useradd; Stratus does not change the host's accounts.
const DEFAULT_RANGE: (u32, u32) = (100_000, 65_536);

impl Remap {
    /// `--userns-remap` as dockerd takes it: `default` (the `dockremap` user), `user`,
    /// `user:group`, `uid` or `uid:gid`, whose first ranges in `/etc/subuid` and `/etc/subgid`
    /// are used.
    pub fn from_host(value: &str) -> Result<Remap> {
        let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
        let files = HostFiles {
            subuid: read("/etc/subuid"),
            subgid: read("/etc/subgid"),
            passwd: read("/etc/passwd"),
            group: read("/etc/group"),
        };
        Remap::parse(value, &files)
    }

    fn parse(value: &str, files: &HostFiles) -> Result<Remap> {
        let (user, group) = match value {
            "default" => ("dockremap", "dockremap"),
            _ => value.split_once(':').unwrap_or((value, value)),
        };
        if user.is_empty() || group.is_empty() {
            return Err(Error::InvalidParameter(format!("invalid --userns-remap: {value:?}")));
        }
        let uids = range(&files.subuid, user, &files.passwd, 2);
        let gids = range(&files.subgid, group, &files.group, 2);
        let ((uid, uid_count), (gid, gid_count)) = match (uids, gids) {
            (Some(uids), Some(gids)) => (uids, gids),
            (None, None) if value == "default" => (DEFAULT_RANGE, DEFAULT_RANGE),
            (None, _) => return Err(Error::InvalidParameter(format!("no subuid ranges found for user {user:?}"))),
            (_, None) => return Err(Error::InvalidParameter(format!("no subgid ranges found for group {group:?}"))),
        };
        Ok(Remap { uid, gid, size: uid_count.min(gid_count) })
    }
}

struct HostFiles {
    subuid: String,
    subgid: String,
    passwd: String,
    group: String,
}

/// The first `name:start:count` line of `subids` for `name`, or for its numeric id (looked up in
/// `accounts`, whose `id_field` holds it), or for `name` itself when it is a number.
fn range(subids: &str, name: &str, accounts: &str, id_field: usize) -> Option<(u32, u32)> {
    let id = accounts
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| fields.get(id_field).map(|id| id.to_string()));
    subids.lines().find_map(|line| {
        let mut fields = line.split(':');
        let owner = fields.next()?;
        if owner != name && Some(owner) != id.as_deref() {
            return None;
        }
        Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
    })
}

/// A user namespace holding the remap's mappings, kept open to idmap the layers' mounts.
pub struct UserNamespace {
    pub remap: Remap,
    fd: OwnedFd,
}

impl UserNamespace {
    /// Makes the namespace. Container roots are under `dir`, which the remapped root must be able
    /// to reach (as with dockerd's data root): it and its parents must be searchable by others.
    pub fn new(remap: Remap, dir: &Path) -> Result<UserNamespace> {
        use std::os::unix::fs::PermissionsExt;
        for ancestor in dir.ancestors() {
            let mode = std::fs::metadata(ancestor).map_err(Error::io("cannot stat", ancestor))?.permissions().mode();
            if mode & 0o001 == 0 {
                return Err(Error::InvalidParameter(format!(
                    "--userns-remap needs {} to be searchable by others (chmod o+x): the remapped root reaches container roots through it",
                    ancestor.display()
                )));
            }
        }
        let fd = mapped_namespace(&remap).map_err(Error::io("cannot make the remap's user namespace", "/proc"))?;
        Ok(UserNamespace { remap, fd })
    }

    /// Mounts `layers` idmapped under `scratch/<n>`, runs `mount` with those paths (it mounts the
    /// overlay), then detaches them: the overlay holds its own clones.
    pub fn with_idmapped(
        &self,
        layers: &[PathBuf],
        scratch: &Path,
        mount: impl FnOnce(&[PathBuf]) -> Result<()>,
    ) -> Result<()> {
        let mut mounted = Vec::new();
        let result = (|| {
            for (n, layer) in layers.iter().enumerate() {
                let target = scratch.join(n.to_string());
                std::fs::create_dir_all(&target).map_err(Error::io("cannot create", &target))?;
                self.mount_idmapped(layer, &target).map_err(Error::io("cannot mount a layer idmapped", layer))?;
                mounted.push(target);
            }
            mount(&mounted)
        })();
        for target in &mounted {
            let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(scratch);
        result
    }

    fn mount_idmapped(&self, source: &Path, target: &Path) -> std::io::Result<()> {
        let tree =
            rustix::mount::open_tree(CWD, source, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)?;
        set_idmap(tree.as_fd(), self.fd.as_fd())?;
        rustix::mount::move_mount(tree.as_fd(), "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)?;
        Ok(())
    }

    /// Gives the container a user namespace with the remap's mappings.
    pub fn apply(&self, spec: &mut Spec) -> Result<()> {
        let invalid =
            |e: oci_spec::OciSpecError| Error::InvalidParameter(format!("cannot build the runtime spec: {e}"));
        let mapping = |host_id: u32| {
            LinuxIdMappingBuilder::default().container_id(0u32).host_id(host_id).size(self.remap.size).build()
        };
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User).build().map_err(invalid)?);
        linux.set_namespaces(Some(namespaces));
        linux.set_uid_mappings(Some(vec![mapping(self.remap.uid).map_err(invalid)?]));
        linux.set_gid_mappings(Some(vec![mapping(self.remap.gid).map_err(invalid)?]));
        spec.set_linux(Some(linux));
        Ok(())
    }

    /// Makes `path` (the container's writable layer) the remapped root's.
    pub fn own(&self, path: &Path) -> Result<()> {
        let ids = (rustix::fs::Uid::from_raw(self.remap.uid), rustix::fs::Gid::from_raw(self.remap.gid));
        rustix::fs::chown(path, Some(ids.0), Some(ids.1)).map_err(|e| Error::io("cannot chown", path)(e.into()))
    }
}

/// A user namespace with the remap's uid and gid mappings, made by a child that unshares one and
/// waits while this process writes its maps and opens it.
#[allow(unsafe_code)]
fn mapped_namespace(remap: &Remap) -> std::io::Result<OwnedFd> {
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (done_read, done_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // Built before the fork: the child of a multi-threaded process may not allocate.
    let maps = [
        (format!("0 {} {}\n", remap.uid, remap.size), "uid_map"),
        ("deny".to_string(), "setgroups"),
        (format!("0 {} {}\n", remap.gid, remap.size), "gid_map"),
    ];
    // SAFETY: the child only makes async-signal-safe calls (unshare, write, read, _exit) on
    // descriptors and stack memory it owns, as a child of a multi-threaded process must.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above; the child never returns.
        unsafe {
            let ok = [u8::from(libc::unshare(libc::CLONE_NEWUSER) == 0)];
            libc::write(ready_write.as_raw_fd(), ok.as_ptr().cast(), 1);
            // Its copy of the write end would keep the read below from ever seeing the end.
            libc::close(done_write.as_raw_fd());
            let mut byte = [0u8];
            libc::read(done_read.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop((ready_write, done_read));
    let result = (|| {
        let mut ok = [0u8];
        rustix::io::read(&ready_read, &mut ok)?;
        if ok[0] != 1 {
            return Err(std::io::Error::other("the child could not unshare a user namespace"));
        }
        for (content, file) in &maps {
            std::fs::write(format!("/proc/{pid}/{file}"), content)?;
        }
        let file = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
        Ok(OwnedFd::from(file))
    })();
    drop(done_write);
    let mut status = 0;
    // SAFETY: waits for the child made above, which exits once `done_write` is closed.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    result
}

/// `mount_setattr(2)` setting MOUNT_ATTR_IDMAP; neither rustix nor nix wraps it.
#[allow(unsafe_code)]
fn set_idmap(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr =
        MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    let empty = CString::default();
    // SAFETY: the path is a valid C string, `attr` is a `struct mount_attr` of the size passed,
    // and both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn files() -> HostFiles {
        HostFiles {
            subuid: "alice:200000:65536\n1001:300000:1000\n".into(),
            subgid: "alice:210000:65536\nstaff:400000:500\n".into(),
            passwd: "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/:/bin/sh\n"
                .into(),
            group: "alice:x:1000:\nstaff:x:50:\n".into(),
        }
    }

    #[test]
    fn remaps_come_from_subordinate_ranges() {
        let parse = |v: &str| Remap::parse(v, &files()).map_err(|e| e.to_string());
        assert_eq!(parse("alice"), Ok(Remap { uid: 200_000, gid: 210_000, size: 65_536 }));
        assert_eq!(parse("alice:staff"), Ok(Remap { uid: 200_000, gid: 400_000, size: 500 }));
        assert_eq!(parse("default"), Ok(Remap { uid: 100_000, gid: 100_000, size: 65_536 }));
        assert_eq!(parse("carol"), Err("no subuid ranges found for user \"carol\"".into()));
        assert_eq!(parse("bob"), Err("no subgid ranges found for group \"bob\"".into()));
        assert_eq!(parse("bob:staff"), Ok(Remap { uid: 300_000, gid: 400_000, size: 500 }));
    }

    #[test]
    fn the_spec_gets_a_user_namespace_and_its_mappings() {
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let ns = UserNamespace { remap: Remap { uid: 100_000, gid: 100_000, size: 65_536 }, fd };
        let mut spec = Spec::default();
        ns.apply(&mut spec).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.namespaces().as_ref().unwrap().iter().any(|n| n.typ() == LinuxNamespaceType::User));
        let uid = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!((uid.container_id(), uid.host_id(), uid.size()), (0, 100_000, 65_536));
    }
}
