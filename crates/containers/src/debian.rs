//! `stratus image bootstrap debian`: a Debian base image made with debootstrap from Debian's
//! apt mirror, since no registry is reachable.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::image::{Image, ImageStore, Reference, base_config, short_id};
use crate::layer;

impl ImageStore {
    /// Runs `debootstrap --variant=minbase <suite>` into a scratch directory beside the store,
    /// passing its lines to `progress`, trims what Docker's Debian images also leave out (apt's
    /// package lists and caches, device nodes, the host's resolv.conf), and stores the tree as a
    /// one-layer image tagged `debian:<suite>`. It downloads about 40 MB and takes minutes.
    pub fn bootstrap_debian(&self, suite: &str, mirror: &str, progress: &mut dyn FnMut(&str)) -> Result<Image> {
        let tag = Reference::parse(&format!("debian:{suite}"))?;
        let scratch_parent = self.layout_dir().parent().unwrap_or(Path::new("/")).to_path_buf();
        let scratch = tempfile::Builder::new()
            .prefix(".debootstrap")
            .tempdir_in(&scratch_parent)
            .map_err(Error::io("cannot create a directory in", &scratch_parent))?;
        let root = scratch.path().join("root");
        let command = format!("debootstrap --variant=minbase {suite} {} {mirror}", root.display());
        progress(&format!("Running {command}"));
        // Through sh only to merge debootstrap's stderr (where it reports progress) into one
        // ordered stream; the arguments are passed as arguments, never as shell text.
        let mut child = Command::new("sh")
            .args(["-c", "exec debootstrap \"$@\" 2>&1", "debootstrap", "--variant=minbase", suite])
            .arg(&root)
            .arg(mirror)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .map_err(Error::io("cannot run debootstrap (install the debootstrap package)", "debootstrap"))?;
        let mut last = Vec::new();
        if let Some(output) = child.stdout.take() {
            for line in BufReader::new(output).lines().map_while(std::result::Result::ok) {
                progress(&line);
                last.push(line);
                if last.len() > 5 {
                    last.remove(0);
                }
            }
        }
        let status = child.wait().map_err(Error::io("cannot wait for debootstrap", &root))?;
        if !status.success() {
            return Err(Error::Runtime(format!("{command} failed ({status}): {}", last.join(" / "))));
        }
        trim(&root).map_err(Error::io("cannot trim the debootstrapped tree", &root))?;

        progress("Storing the root filesystem as a layer");
        let (reader, writer) = std::io::pipe().map_err(Error::io("cannot make a pipe for", &root))?;
        let packer = {
            let root = root.clone();
            std::thread::spawn(move || layer::pack(&root, writer))
        };
        let stored = self.store_layer(BufReader::with_capacity(1 << 16, reader));
        let packed = packer.join().map_err(|_| Error::Runtime("packing the layer panicked".into()))?;
        let (layer, _) = stored?;
        if let Err(error) = packed {
            self.discard(std::slice::from_ref(&layer))?;
            return Err(Error::io("cannot pack", &root)(error));
        }
        progress(&format!("Layer {} ({:.1} MB)", short_id(&layer.diff_id), layer.size as f64 / 1e6));

        let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let created_by = format!("stratus image bootstrap debian ({command})");
        let config = base_config(&created, "bash", &created_by, &layer)?;
        let stored =
            self.store_image(&config, &Default::default(), std::slice::from_ref(&layer), std::slice::from_ref(&tag));
        if stored.is_err() {
            self.discard(std::slice::from_ref(&layer))?;
        }
        let image = stored?;
        progress(&format!("Image {} tagged {tag}", short_id(&image.id)));
        Ok(image)
    }
}

/// What Docker's Debian images leave out: apt's lists and caches (rebuilt by `apt-get update`),
/// device nodes (the runtime makes /dev), and the host's resolver config (the runtime writes it).
fn trim(root: &Path) -> std::io::Result<()> {
    for dir in ["var/lib/apt/lists", "var/cache/apt", "dev"] {
        let dir = root.join(dir);
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let keep = ["lock", "partial", "archives"].contains(&entry.file_name().to_string_lossy().as_ref());
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                if !keep {
                    fs::remove_dir_all(&path)?;
                } else if path.ends_with("archives") {
                    for deb in fs::read_dir(&path)? {
                        let deb = deb?.path();
                        if deb.extension().is_some_and(|e| e == "deb") {
                            fs::remove_file(deb)?;
                        }
                    }
                }
            } else if !keep {
                fs::remove_file(&path)?;
            }
        }
    }
    fs::write(root.join("etc/resolv.conf"), b"")?;
    Ok(())
}
