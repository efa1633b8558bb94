//! Another kernel than this machine's: a Debian kernel package, extracted
//! (not installed), booted under qemu with an initramfs of a static
//! busybox, Debian's conntrack-tools with its libraries, the conntrack
//! modules of the same package and the programs a test gives it. The guest
//! runs a shell script and powers off; its serial console is the result.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::command::stdout;
use crate::error::{self, io, unexpected, Result};

/// The kernel the suite tests besides this machine's: Debian 12's, which
/// is also the kernel line of Amazon Linux 2023. Pinned, so that a Debian
/// point release changes what is tested only with a commit.
pub const DEBIAN_KERNEL: (&str, &str) = ("linux-image-6.1.0-50-cloud-amd64-unsigned", "6.1.176-1");

/// The conntrack modules and what they need, in load order. The table's
/// limit follows the guest's memory (8192 entries in 1 GiB), so the guest
/// raises it as a node would.
const MODULES: &[&str] = &[
    "kernel/net/netfilter/nfnetlink.ko",
    "kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko",
    "kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko",
    "kernel/lib/libcrc32c.ko",
    "kernel/net/netfilter/nf_conntrack.ko",
    "kernel/net/netfilter/nf_conntrack_netlink.ko",
];

pub struct Kernel {
    pub package: String,
    pub release: String,
    /// The extracted package.
    root: PathBuf,
}

fn cache() -> PathBuf {
    std::env::var_os("FLUSH_CONNTRACK_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        base.join("flush-conntrack")
    })
}

impl Kernel {
    /// Downloads (once, cached) and extracts a kernel package of Debian's.
    pub fn debian(package: &str, version: &str) -> Result<Kernel> {
        let dir = cache().join(format!("{package}_{version}"));
        let root = dir.join("root");
        if !root.join("boot").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
            stdout(
                Command::new("apt-get").current_dir(&dir).args(["download", &format!("{package}={version}")]),
            )?;
            let deb = std::fs::read_dir(&dir)
                .map_err(io(dir.display()))?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb"))
                .ok_or_else(|| unexpected("apt-get download left no .deb"))?;
            stdout(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        }
        let modules = root.join("lib/modules");
        let release = std::fs::read_dir(&modules)
            .map_err(io(modules.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .ok_or_else(|| unexpected("the package has no modules"))?;
        Ok(Kernel { package: package.to_owned(), release, root })
    }

    fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    /// Boots the kernel with `files` (host path, guest path) and runs
    /// `script` as root; returns what the guest printed. A guest that does
    /// not finish within `timeout` is an error.
    pub fn run(
        &self,
        work: &Path,
        files: &[(PathBuf, &str)],
        script: &str,
        timeout: Duration,
    ) -> Result<String> {
        let image = self.initramfs(work, files, script)?;
        let console = work.join("console.log");
        let status = self.boot(&image, &console, timeout)?;
        let output = String::from_utf8_lossy(&std::fs::read(&console).map_err(io(console.display()))?)
            .replace("\r\n", "\n");
        if !output.contains("FCT-VM-DONE") {
            return Err(unexpected(format!(
                "the {} guest stopped ({status}) before its end:\n{output}",
                self.release
            )));
        }
        if let Some(line) = output.lines().find(|l| l.contains("FCT-VM-MODULE-FAILED")) {
            return Err(unexpected(format!("a module did not load in the guest: {line}\n{output}")));
        }
        Ok(output)
    }

    /// The guest's initramfs: busybox, conntrack and its libraries, the
    /// kernel's modules, `files`, and an init that runs `script`.
    fn initramfs(&self, work: &Path, files: &[(PathBuf, &str)], script: &str) -> Result<PathBuf> {
        let tree = work.join("initramfs");
        let _ = std::fs::remove_dir_all(&tree);
        for dir in ["bin", "proc", "sys", "dev", "tmp", "lib/modules"] {
            std::fs::create_dir_all(tree.join(dir)).map_err(io(tree.join(dir).display()))?;
        }
        let mut copies: Vec<(PathBuf, String)> =
            files.iter().map(|(h, g)| (h.clone(), g.trim_start_matches('/').to_owned())).collect();
        copies.push((PathBuf::from("/bin/busybox"), "bin/busybox".to_owned()));
        copies.push((PathBuf::from("/usr/sbin/conntrack"), "bin/conntrack".to_owned()));
        for library in libraries(Path::new("/usr/sbin/conntrack"))? {
            let guest = library.display().to_string().trim_start_matches('/').to_owned();
            copies.push((library, guest));
        }
        let modules = self.root.join("lib/modules").join(&self.release);
        for (i, module) in MODULES.iter().enumerate() {
            copies.push((modules.join(module), format!("lib/modules/{i}.ko")));
        }
        for (host, guest) in &copies {
            let target = tree.join(guest);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent.display()))?;
            }
            std::fs::copy(host, &target).map_err(io(host.display()))?;
        }
        let init = format!(
            "#!/bin/busybox sh\n/bin/busybox --install -s /bin\nexport PATH=/bin\n\
             mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
             exec </dev/console >/dev/console 2>&1\n\
             for m in $(ls /lib/modules | sort -n); do insmod /lib/modules/$m || echo \"FCT-VM-MODULE-FAILED $m\"; done\n\
             echo 1048576 > /proc/sys/net/netfilter/nf_conntrack_max\n\
             ip link set lo up\necho FCT-VM-BOOTED $(uname -r)\n{script}\necho FCT-VM-DONE\npoweroff -f\n"
        );
        // The kernel gives init /dev/console as its output, if the image has one.
        stdout(Command::new("mknod").arg(tree.join("dev/console")).args(["c", "5", "1"]))?;
        let init_path = tree.join("init");
        std::fs::write(&init_path, init).map_err(io(init_path.display()))?;
        stdout(Command::new("chmod").args(["-R", "a+rx"]).arg(&tree))?;
        let image = work.join("initramfs.cpio.gz");
        stdout(
            Command::new("sh")
                .current_dir(&tree)
                .arg("-c")
                .arg(format!("find . | cpio -o -H newc --quiet | gzip -1 > {}", image.display())),
        )?;
        Ok(image)
    }

    /// Boots the kernel on `image`, its console in `console`, and waits
    /// for the guest to power off.
    fn boot(&self, image: &Path, console: &Path, timeout: Duration) -> Result<std::process::ExitStatus> {
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-m", "1024", "-smp", "2", "-nographic", "-no-reboot", "-kernel"])
            .arg(self.vmlinuz())
            .arg("-initrd")
            .arg(image)
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(console).map_err(io(console.display()))?)
            .stderr(Stdio::inherit());
        // KVM where it works (nested virtualisation is often refused).
        if kvm_works() {
            qemu.args(["-enable-kvm", "-cpu", "host"]);
        } else {
            qemu.args(["-cpu", "max"]);
        }
        crate::controlplane::die_with_parent(&mut qemu);
        let mut child = qemu.spawn().map_err(error::spawn("qemu"))?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io("qemu"))? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(unexpected(format!(
                    "the {} guest did not finish within {timeout:?}; it printed:\n{}",
                    self.release,
                    std::fs::read_to_string(console).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        Ok(status)
    }
}

fn kvm_works() -> bool {
    std::env::var("FCT_VM_KVM").is_ok_and(|v| v == "1")
}

/// The shared libraries a program loads, with the loader, from ldd.
fn libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = stdout(Command::new("ldd").arg(program))?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect())
}

/// One scenario's part of a guest's output, between its markers.
pub fn section<'a>(output: &'a str, name: &str) -> Option<&'a str> {
    let start = output.find(&format!("=== BEGIN {name}\n"))? + name.len() + 11;
    let end = output[start..].find(&format!("=== END {name}"))? + start;
    Some(&output[start..end])
}
