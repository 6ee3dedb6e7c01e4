//! Layer tars and the directories overlayfs stacks. A layer tar says "delete `x` of the layers
//! below" with an empty file `.wh.x` and "hide everything below this directory" with
//! `.wh..wh..opq` (the OCI/AUFS whiteouts). Each layer is unpacked into its own directory and
//! overlayfs stacks them, so whiteouts are written in overlayfs's own form: a character device
//! 0/0 named `x`, and the `trusted.overlay.opaque=y` xattr on the directory.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{CWD, FileType, Mode, XattrFlags};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Unpacks a layer tar into `dir` (which exists), turning whiteouts into overlayfs whiteouts and
/// keeping ownership, permissions, file mtimes, xattrs, hardlinks and symlinks. A path with `..`,
/// or one that would be written through a symlink leading out of `dir`, fails the whole layer.
pub(crate) fn unpack(reader: impl Read, dir: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    // Directories get their permissions last, as tar's own `unpack` does, so that a read-only
    // directory does not stop its entries from being written.
    let mut directories = Vec::new();
    let mut opaque = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = inside(&entry.path()?)?;
        let Some(name) = path.file_name() else { continue };
        let parent = path.parent().unwrap_or(Path::new(""));
        if name == OPAQUE_MARKER {
            opaque.push(make_dirs(dir, parent)?);
        } else if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            whiteout(&make_dirs(dir, parent)?.join(OsStr::from_bytes(hidden)))?;
        } else if entry.header().entry_type().is_dir() {
            directories.push(entry);
        } else {
            entry.unpack_in(dir)?;
        }
    }
    for mut directory in directories {
        directory.unpack_in(dir)?;
    }
    for directory in opaque {
        rustix::fs::setxattr(&directory, OPAQUE_XATTR, b"y", XattrFlags::empty())?;
    }
    Ok(())
}

/// The entry's path relative to the layer's root: a leading `/` and `.` parts are dropped (as
/// Docker does), `..` is refused (tar's `unpack_in` would silently skip it).
fn inside(path: &Path) -> io::Result<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("invalid path in layer: {} leaves the layer", path.display()),
                ));
            }
        }
    }
    Ok(relative)
}

/// Creates `relative`'s directories under `root`, refusing to pass through anything that is not
/// a real directory (a symlink could lead outside the layer).
fn make_dirs(root: &Path, relative: &Path) -> io::Result<PathBuf> {
    let mut path = root.to_path_buf();
    for part in relative.components() {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("invalid path in layer: {} is not a directory", relative.display()),
                ));
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => fs::create_dir(&path)?,
            Err(error) => return Err(error),
        }
    }
    Ok(path)
}

/// Replaces whatever is at `path` with an overlayfs whiteout.
fn whiteout(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    rustix::fs::mknodat(CWD, path, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))?;
    Ok(())
}

/// Writes an overlayfs upper directory as a layer tar, the reverse of `unpack`: a 0/0 character
/// device `x` becomes `.wh.x`, an opaque directory gets `.wh..wh..opq`. overlayfs's own xattrs
/// are not copied; hardlinked files are written once per name.
pub(crate) fn pack(upper: &Path, out: impl Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    // A container never started has no upper directory yet: it changed nothing.
    if upper.exists() {
        pack_dir(&mut tar, upper, Path::new(""))?;
    }
    tar.into_inner()?.flush()
}

fn pack_dir<W: Write>(tar: &mut tar::Builder<W>, root: &Path, relative: &Path) -> io::Result<()> {
    let mut names: Vec<_> =
        fs::read_dir(root.join(relative))?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = relative.join(&name);
        let full = root.join(&path);
        let meta = fs::symlink_metadata(&full)?;
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            let mut whiteout = OsString::from(WHITEOUT_PREFIX);
            whiteout.push(&name);
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o600);
            header.set_size(0);
            header.set_mtime(meta.mtime().max(0) as u64);
            tar.append_data(&mut header, relative.join(whiteout), io::empty())?;
        } else if kind.is_socket() {
            // A socket is not content (Docker's tars leave them out too).
        } else if kind.is_dir() {
            tar.append_path_with_name(&full, &path)?;
            let mut value = [0u8; 1];
            if rustix::fs::getxattr(&full, OPAQUE_XATTR, &mut value).is_ok_and(|n| value[..n] == *b"y") {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o600);
                header.set_size(0);
                tar.append_data(&mut header, path.join(OPAQUE_MARKER), io::empty())?;
            }
            pack_dir(tar, root, &path)?;
        } else {
            tar.append_path_with_name(&full, &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(kind: tar::EntryType) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(0o644);
        header.set_size(0);
        header
    }

    fn entry(tar: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, data: &[u8]) {
        let mut header = header(kind);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header.set_size(data.len() as u64);
        header.set_mtime(1000);
        tar.append_data(&mut header, path, data).unwrap();
    }

    fn link(tar: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut header = header(kind);
        tar.append_link(&mut header, path, target).unwrap();
    }

    #[test]
    fn whiteouts_become_overlayfs_whiteouts() {
        let mut tar = tar::Builder::new(Vec::new());
        entry(&mut tar, tar::EntryType::Directory, "etc/", b"");
        entry(&mut tar, tar::EntryType::Regular, "etc/.wh.motd", b"");
        entry(&mut tar, tar::EntryType::Directory, "var/cache/", b"");
        entry(&mut tar, tar::EntryType::Regular, "var/cache/.wh..wh..opq", b"");
        entry(&mut tar, tar::EntryType::Regular, "var/cache/new", b"kept");
        entry(&mut tar, tar::EntryType::Regular, "usr/bin/tool", b"#!/bin/sh\n");
        link(&mut tar, tar::EntryType::Link, "usr/bin/same", "usr/bin/tool");
        link(&mut tar, tar::EntryType::Symlink, "usr/bin/alias", "tool");
        let dir = tempfile::tempdir().unwrap();
        unpack(tar.into_inner().unwrap().as_slice(), dir.path()).unwrap();

        let motd = fs::symlink_metadata(dir.path().join("etc/motd")).unwrap();
        assert!(motd.file_type().is_char_device() && motd.rdev() == 0);
        assert!(!dir.path().join("etc/.wh.motd").exists());
        let cache = dir.path().join("var/cache");
        assert_eq!(rustix_xattr(&cache), b"y");
        assert_eq!(fs::read(cache.join("new")).unwrap(), b"kept");
        assert!(!cache.join(".wh..wh..opq").exists());
        let tool = fs::metadata(dir.path().join("usr/bin/tool")).unwrap();
        assert_eq!(tool.nlink(), 2);
        assert_eq!(fs::read_link(dir.path().join("usr/bin/alias")).unwrap(), Path::new("tool"));
    }

    fn rustix_xattr(path: &Path) -> Vec<u8> {
        let mut value = [0u8; 8];
        let n = rustix::fs::getxattr(path, OPAQUE_XATTR, &mut value).unwrap();
        value[..n].to_vec()
    }

    /// Raw headers, since tar's builder itself refuses `..`.
    fn raw_entry(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut header = header(tar::EntryType::Regular);
        header.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append(&header, data).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Archives of directories, files, whiteouts, symlinks and hard links with paths and
        /// targets that climb, are absolute, or go through earlier links: unpacked or refused,
        /// and either way nothing is written beside the layer's directory.
        #[test]
        fn no_archive_writes_outside_its_layer(
            entries in proptest::collection::vec((
                0u8..4,
                proptest::collection::vec(proptest::sample::select(vec!["a", "b", "..", ".", ".wh.a", ".wh..wh..opq", "/"]), 1..4),
                proptest::sample::select(vec!["a", "../outside", "../../outside/x", "/", "OUT", "a/b", "."]),
            ), 1..8),
        ) {
            let root = tempfile::tempdir().unwrap();
            let (layer, outside) = (root.path().join("layer"), root.path().join("outside"));
            fs::create_dir(&layer).unwrap();
            fs::create_dir(&outside).unwrap();
            let mut tar = tar::Builder::new(Vec::new());
            for (kind, segments, target) in entries {
                let path = segments.join("/");
                let target = target.replace("OUT", &outside.display().to_string());
                let kind = [tar::EntryType::Directory, tar::EntryType::Regular, tar::EntryType::Symlink, tar::EntryType::Link][usize::from(kind)];
                let mut header = header(kind);
                let name = &mut header.as_gnu_mut().unwrap().name;
                name[..path.len().min(100)].copy_from_slice(&path.as_bytes()[..path.len().min(100)]);
                if kind.is_symlink() || kind.is_hard_link() {
                    header.as_gnu_mut().unwrap().linkname[..target.len().min(100)].copy_from_slice(&target.as_bytes()[..target.len().min(100)]);
                }
                let data: &[u8] = if kind.is_file() { b"x" } else { b"" };
                header.set_size(data.len() as u64);
                header.set_cksum();
                tar.append(&header, data).unwrap();
            }
            let _ = unpack(tar.into_inner().unwrap().as_slice(), &layer);
            let beside: Vec<_> = fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            proptest::prop_assert_eq!(beside.len(), 2, "{:?}", beside);
            proptest::prop_assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        }
    }

    #[test]
    fn paths_leaving_the_layer_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        for case in ["dotdot", "symlink", "whiteout", "hardlink"] {
            let mut tar = tar::Builder::new(Vec::new());
            match case {
                "dotdot" => raw_entry(&mut tar, "a/../../escaped", b"x"),
                "symlink" => {
                    link(&mut tar, tar::EntryType::Symlink, "up", outside.path().to_str().unwrap());
                    entry(&mut tar, tar::EntryType::Regular, "up/escaped", b"x");
                }
                "whiteout" => {
                    link(&mut tar, tar::EntryType::Symlink, "up", outside.path().to_str().unwrap());
                    entry(&mut tar, tar::EntryType::Regular, "up/.wh.escaped", b"");
                }
                _ => {
                    let mut header = header(tar::EntryType::Link);
                    header.as_gnu_mut().unwrap().name[..4].copy_from_slice(b"hard");
                    let target = format!("{}/escaped", outside.path().display());
                    header.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
                    header.set_cksum();
                    tar.append(&header, std::io::empty()).unwrap();
                }
            }
            let dir = tempfile::tempdir().unwrap();
            assert!(unpack(tar.into_inner().unwrap().as_slice(), dir.path()).is_err(), "{case}");
            assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "{case} wrote outside");
        }
    }
}
