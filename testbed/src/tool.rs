//! Runs the flush-conntrack binary the way a node runs it: in a network
//! namespace, configured by environment only, optionally without
//! CAP_NET_ADMIN or with a `/dev` of its own holding a termination-log.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use nix::sched::CloneFlags;

use crate::netns::Netns;

/// linux/capability.h; the libc crate does not define capability numbers.
const CAP_NET_ADMIN: libc::c_ulong = 12;

#[derive(Default, Clone)]
pub struct Options<'a> {
    /// Drop CAP_NET_ADMIN from the bounding set before exec.
    pub without_net_admin: bool,
    /// Bind this directory over `/dev` in a private mount namespace.
    pub dev: Option<&'a Path>,
    /// chroot into this directory before exec (the binary path is then
    /// inside it).
    pub root: Option<&'a Path>,
}

pub fn command(binary: &str, ns: &Netns, env: &[(&str, &str)], options: Options) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env_clear();
    cmd.envs(env.iter().copied());
    let netns = ns.open().expect("namespace exists");
    let dev = options.dev.map(|d| CString::new(d.as_os_str().as_encoded_bytes()).expect("path without NUL"));
    let without_net_admin = options.without_net_admin;
    let root =
        options.root.map(|d| CString::new(d.as_os_str().as_encoded_bytes()).expect("path without NUL"));
    // SAFETY: only async-signal-safe calls between fork and exec; every
    // allocation (CStrings, the fd) happened before.
    unsafe {
        cmd.pre_exec(move || {
            crate::netns::join(&netns, CloneFlags::CLONE_NEWNET)?;
            if let Some(dev) = &dev {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let root = c"/".as_ptr();
                if libc::mount(
                    std::ptr::null(),
                    root,
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::mount(
                    dev.as_ptr(),
                    c"/dev".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(root) = &root {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if without_net_admin && libc::prctl(libc::PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

pub fn run(binary: &str, ns: &Netns, env: &[(&str, &str)], options: Options) -> Output {
    command(binary, ns, env, options).output().expect("flush-conntrack starts")
}
