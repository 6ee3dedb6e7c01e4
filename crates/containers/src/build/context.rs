//! What COPY and ADD read: the build context (unpacked from the client's tar, less what
//! `.dockerignore` excludes) or another stage's or image's root, and the layer they make.
//!
//! Paths are resolved inside their root: a symlink is followed as if the root were `/`, and `..`
//! stops at the root, so a context or image cannot make the builder read the host's files.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::Digest as _;

/// How deep symlinks may chain before resolution gives up (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// `.dockerignore`: patterns in order; a later `!pattern` re-includes what an earlier one
/// excluded. A pattern that matches a directory excludes everything under it.
#[derive(Debug, Default)]
pub struct Ignore {
    patterns: Vec<(bool, String)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let cleaned = clean(pattern);
                (!cleaned.is_empty()).then_some((exception, cleaned))
            })
            .collect();
        Ignore { patterns }
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for (exception, pattern) in &self.patterns {
            let mut candidate = Some(path);
            while let Some(p) = candidate {
                if glob_match(pattern, p) {
                    excluded = !exception;
                    break;
                }
                candidate = p.rfind('/').map(|slash| &p[..slash]);
            }
        }
        excluded
    }
}

/// A path cleaned as Go's `filepath.Clean` does, relative (no leading `/`), `""` for the root.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// Go's `filepath.Match` (`*` and `?` stop at `/`, `[a-z]`, `[^x]`, `\` escapes), plus
/// `.dockerignore`'s `**`, which crosses directories. Written here because Docker's exact
/// semantics matter for which files a build sees, and they are a few lines.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches_from(&pattern, &name)
}

fn matches_from(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) if rest.first() == Some(&'*') => {
            // `**/` also matches no directory at all.
            let after = &rest[1..];
            if let Some(after_slash) = after.strip_prefix(&['/'])
                && matches_from(after_slash, name)
            {
                return true;
            }
            (0..=name.len()).any(|skip| matches_from(after, &name[skip..]))
        }
        Some(('*', rest)) => {
            let segment = name.iter().position(|c| *c == '/').unwrap_or(name.len());
            (0..=segment).any(|skip| matches_from(rest, &name[skip..]))
        }
        Some(('?', rest)) => name.first().is_some_and(|c| *c != '/') && matches_from(rest, &name[1..]),
        Some(('[', rest)) => {
            let Some((&c, name_rest)) = name.split_first() else { return false };
            match class_match(rest, c) {
                Some((true, after)) if c != '/' => matches_from(after, name_rest),
                _ => false,
            }
        }
        Some(('\\', rest)) if !rest.is_empty() => name.first() == rest.first() && matches_from(&rest[1..], &name[1..]),
        Some((p, rest)) => name.first() == Some(p) && matches_from(rest, &name[1..]),
    }
}

/// Matches `c` against a class whose `[` is already consumed; returns whether it matched and
/// the pattern after the `]`, or `None` for a malformed class (which matches nothing).
fn class_match(mut pattern: &[char], c: char) -> Option<(bool, &[char])> {
    let negated = matches!(pattern.first(), Some('^' | '!'));
    if negated {
        pattern = &pattern[1..];
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let (&low, rest) = pattern.split_first()?;
        if low == ']' && !first {
            return Some((matched != negated, rest));
        }
        first = false;
        let (low, rest) = if low == '\\' { (*rest.first()?, &rest[1..]) } else { (low, rest) };
        if rest.first() == Some(&'-') && rest.get(1).is_some_and(|h| *h != ']') {
            let high = *rest.get(1)?;
            matched |= low <= c && c <= high;
            pattern = &rest[2..];
        } else {
            matched |= low == c;
            pattern = rest;
        }
    }
}

/// Whether the word holds glob characters.
pub fn is_pattern(word: &str) -> bool {
    word.contains(['*', '?', '['])
}

/// Resolves `path` inside `root` without leaving it: symlinks are followed relative to the root.
/// The last component is followed too when `follow_last` is set. The result may not exist.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<String> = clean(path).split('/').filter(|p| !p.is_empty()).rev().map(str::to_string).collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let is_last = pending.is_empty();
        match fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) if meta.file_type().is_symlink() && (!is_last || follow_last) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::other(format!("too many levels of symbolic links: {path}")));
                }
                let target = fs::read_link(root.join(&candidate))?;
                let target = target.to_string_lossy();
                if target.starts_with('/') {
                    resolved = PathBuf::new();
                }
                pending.extend(target.split('/').filter(|p| !p.is_empty() && *p != ".").rev().map(str::to_string));
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Every path under `root` (relative, `/`-separated), parents before children, in name order,
/// without what `ignore` excludes.
pub fn walk(root: &Path, ignore: &Ignore) -> io::Result<Vec<String>> {
    let mut paths = Vec::new();
    walk_into(root, "", ignore, &mut paths)?;
    Ok(paths)
}

fn walk_into(root: &Path, relative: &str, ignore: &Ignore, paths: &mut Vec<String>) -> io::Result<()> {
    let mut names: Vec<String> = fs::read_dir(root.join(relative))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = if relative.is_empty() { name } else { format!("{relative}/{name}") };
        if ignore.excludes(&path) {
            continue;
        }
        paths.push(path.clone());
        if fs::symlink_metadata(root.join(&path))?.is_dir() {
            walk_into(root, &path, ignore, paths)?;
        }
    }
    Ok(())
}

/// A tar of files copied into an image, and the checksum of what it holds (names, modes, owners,
/// link targets and contents, not times), which keys the build cache.
pub struct CopyLayer {
    tar: tar::Builder<Vec<u8>>,
    hash: sha2::Sha256,
    /// Directories already in the tar.
    directories: BTreeSet<String>,
    owner: Option<(u32, u32)>,
}

impl CopyLayer {
    /// `owner` is `--chown`'s; without it files belong to root, as in Docker.
    pub fn new(owner: Option<(u32, u32)>) -> CopyLayer {
        CopyLayer { tar: tar::Builder::new(Vec::new()), hash: sha2::Sha256::new(), directories: BTreeSet::new(), owner }
    }

    /// Adds the directories leading to `path` (relative to the image's root) that are not in
    /// the tar yet, with the mode and owner `existing` reports for those already in the image.
    pub fn parents(&mut self, path: &str, existing: &dyn Fn(&str) -> Option<fs::Metadata>) -> io::Result<()> {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.directories.contains(&prefix) {
                continue;
            }
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            match existing(&prefix) {
                Some(meta) => {
                    header.set_mode(meta.mode() & 0o7777);
                    header.set_uid(meta.uid().into());
                    header.set_gid(meta.gid().into());
                    header.set_mtime(meta.mtime().max(0) as u64);
                }
                None => {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    header.set_mtime(now.as_secs());
                    header.set_mode(0o755);
                    let (uid, gid) = self.owner.unwrap_or((0, 0));
                    header.set_uid(uid.into());
                    header.set_gid(gid.into());
                }
            }
            header.set_size(0);
            self.append(&mut header, &format!("{prefix}/"), io::empty())?;
            self.directories.insert(prefix.clone());
        }
        Ok(())
    }

    /// Adds `source` (a file, directory or symlink on the host) as `target`; a directory is
    /// added with everything under it, less what `ignore` excludes (`relative` is its path in
    /// the context, for that check).
    pub fn add(&mut self, source: &Path, target: &str, ignore: &Ignore, relative: &str) -> io::Result<()> {
        let meta = fs::symlink_metadata(source)?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if let Some((uid, gid)) = self.owner {
            header.set_uid(uid.into());
            header.set_gid(gid.into());
        }
        let file_type = meta.file_type();
        if file_type.is_dir() {
            header.set_size(0);
            if !target.is_empty() && self.directories.insert(target.to_string()) {
                self.append(&mut header, &format!("{target}/"), io::empty())?;
            }
            let mut names: Vec<_> = fs::read_dir(source)?.collect::<io::Result<Vec<_>>>()?;
            names.sort_by_key(|entry| entry.file_name());
            for entry in names {
                let name = entry.file_name().to_string_lossy().into_owned();
                let child_relative = if relative.is_empty() { name.clone() } else { format!("{relative}/{name}") };
                if ignore.excludes(&child_relative) {
                    continue;
                }
                let child_target = if target.is_empty() { name } else { format!("{target}/{name}") };
                self.add(&entry.path(), &child_target, ignore, &child_relative)?;
            }
        } else if file_type.is_symlink() {
            let link = fs::read_link(source)?;
            header.set_size(0);
            self.hash.update(link.as_os_str().as_encoded_bytes());
            self.tar.append_link(&mut header, target, &link)?;
            self.hash_header(&header, target);
        } else if file_type.is_file() {
            self.append(&mut header, target, fs::File::open(source)?)?;
        } else {
            return Err(io::Error::other(format!(
                "cannot copy {}: not a file, directory or symlink",
                source.display()
            )));
        }
        Ok(())
    }

    /// Adds the entries of a tar archive (ADD's local archives) under `target`.
    pub fn extract(&mut self, archive: impl Read, target: &str) -> io::Result<()> {
        let mut archive = tar::Archive::new(archive);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = clean(&entry.path()?.to_string_lossy());
            if path.is_empty() {
                continue;
            }
            let name = if target.is_empty() { path } else { format!("{target}/{path}") };
            let mut header = entry.header().clone();
            if let Some((uid, gid)) = self.owner {
                header.set_uid(uid.into());
                header.set_gid(gid.into());
            }
            match header.entry_type() {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let link = entry.link_name()?.unwrap_or_default().into_owned();
                    self.hash.update(link.as_os_str().as_encoded_bytes());
                    self.tar.append_link(&mut header, &name, &link)?;
                    self.hash_header(&header, &name);
                }
                tar::EntryType::Directory => {
                    self.directories.insert(name.clone());
                    self.append(&mut header, &format!("{name}/"), io::empty())?;
                }
                _ => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data)?;
                    self.append(&mut header, &name, data.as_slice())?;
                }
            }
        }
        Ok(())
    }

    fn append(&mut self, header: &mut tar::Header, path: &str, mut data: impl Read) -> io::Result<()> {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes)?;
        header.set_size(bytes.len() as u64);
        self.hash.update(&bytes);
        self.tar.append_data(header, path, bytes.as_slice())?;
        self.hash_header(header, path);
        Ok(())
    }

    fn hash_header(&mut self, header: &tar::Header, path: &str) {
        let fields = format!(
            "\0{path}\0{:?}\0{:o}\0{}\0{}\0",
            header.entry_type(),
            header.mode().unwrap_or(0),
            header.uid().unwrap_or(0),
            header.gid().unwrap_or(0)
        );
        self.hash.update(fields.as_bytes());
    }

    /// The finished tar and its checksum (`sha256:...`).
    pub fn finish(self) -> io::Result<(Vec<u8>, String)> {
        let hash = self.hash.finalize();
        let checksum = hash.iter().fold(String::from("sha256:"), |mut text, byte| {
            text.push_str(&format!("{byte:02x}"));
            text
        });
        let mut tar = self.tar;
        tar.finish()?;
        let mut bytes = tar.into_inner()?;
        bytes.flush()?;
        Ok((bytes, checksum))
    }
}

/// Whether `path` holds only `Normal` components (a context path from the client).
pub fn is_plain_relative(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn globs_follow_go_filepath_match() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "dir/a.txt"));
        assert!(glob_match("dir/*", "dir/a.txt"));
        assert!(glob_match("a?c", "abc") && !glob_match("a?c", "a/c"));
        assert!(glob_match("[a-c]x", "bx") && !glob_match("[^a-c]x", "bx") && glob_match("[!a-c]x", "dx"));
        assert!(glob_match("\\*", "*") && !glob_match("\\*", "a"));
        assert!(glob_match("**/*.log", "a/b/c.log") && glob_match("**/*.log", "c.log"));
        assert!(glob_match("a/**", "a/b/c"));
        assert!(!glob_match("[a-", "a"));
    }

    #[test]
    fn dockerignore_excludes_directories_and_honours_exceptions() {
        let ignore = Ignore::parse("# comment\nsecret\n*.log\n!keep.log\n/build/\ntmp/**\n");
        assert!(ignore.excludes("secret") && ignore.excludes("secret/inner/file"));
        assert!(ignore.excludes("debug.log") && !ignore.excludes("keep.log"));
        assert!(ignore.excludes("build/out") && !ignore.excludes("src/build"));
        assert!(ignore.excludes("tmp/x/y"));
        assert!(!ignore.excludes("Dockerfile") && !ignore.excludes("dir/debug.log"));
        assert_eq!(clean("/a/./b/../c/"), "a/c");
        assert_eq!(clean("../.."), "");
    }

    #[test]
    fn resolution_never_leaves_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("real")).unwrap();
        fs::write(root.join("real/file"), b"x").unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../etc", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_in_root(root, "abs/file", true).unwrap(), root.join("real/file"));
        assert_eq!(resolve_in_root(root, "escape/passwd", true).unwrap(), root.join("etc/passwd"));
        assert_eq!(resolve_in_root(root, "../../real", true).unwrap(), root.join("real"));
        assert_eq!(resolve_in_root(root, "abs", false).unwrap(), root.join("abs"));
        assert!(resolve_in_root(root, "loop", true).is_err());
    }

    #[test]
    fn copy_layers_hash_content_not_times() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("src/sub")).unwrap();
        fs::write(dir.path().join("src/a"), b"one").unwrap();
        fs::write(dir.path().join("src/sub/b.log"), b"two").unwrap();
        let ignore = Ignore::parse("src/sub/*.log");
        let layer = |ignore: &Ignore| {
            let mut layer = CopyLayer::new(Some((7, 8)));
            layer.parents("app/src/x", &|_| None).unwrap();
            layer.add(&dir.path().join("src"), "app/src", ignore, "src").unwrap();
            layer.finish().unwrap()
        };
        let (tar, first) = layer(&ignore);
        let names: Vec<(String, u64)> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().uid().unwrap())
            })
            .collect();
        assert_eq!(
            names,
            vec![("app/".into(), 7), ("app/src/".into(), 7), ("app/src/a".into(), 7), ("app/src/sub/".into(), 7)]
        );
        filetime_touch(&dir.path().join("src/a"));
        assert_eq!(layer(&ignore).1, first, "a new mtime changes nothing");
        fs::write(dir.path().join("src/a"), b"ONE").unwrap();
        assert_ne!(layer(&ignore).1, first, "new content changes the checksum");
    }

    fn filetime_touch(path: &Path) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    }
}
