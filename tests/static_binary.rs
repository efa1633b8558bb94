//! The shipped image holds the binary and nothing else it could lean on:
//! the binary the Dockerfile's build stage builds (testbed::recipe) must
//! start, refuse bad input and flush with no file of the image but itself,
//! run chrooted into an empty directory.

use std::path::PathBuf;
use std::process::Command;

use testbed::netns::Netns;
use testbed::table::{self, Flow};
use testbed::{require, tool};

fn static_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    testbed::recipe::shipped_binary(&root).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_static_build_runs_in_an_empty_root() {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux"))
        || !require::kernel_test("a_static_build_runs_in_an_empty_root", &["ip", "conntrack"])
    {
        return;
    }
    let binary = static_binary();
    let out = Command::new("ldd").arg(&binary).output().expect("ldd");
    let ldd = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(ldd.contains("not a dynamic executable") || ldd.contains("statically linked"), "{ldd}");

    let empty = std::env::temp_dir().join(format!("fct-empty-root-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(&binary, empty.join("flush-conntrack")).unwrap();
    let entries: Vec<_> = std::fs::read_dir(&empty).unwrap().collect();
    assert_eq!(entries.len(), 1, "the root holds the binary alone");

    let ns = Netns::new("empty-root");
    Flow::udp("192.0.2.2", 40000, "192.0.2.1", 8125, "198.51.100.5").insert_with_conntrack(&ns);
    let options = || tool::Options { root: Some(&empty), ..Default::default() };

    let out = tool::run("/flush-conntrack", &ns, &[("MODE", "flush"), ("TARGET_PORT", "0")], options());
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TARGET_PORT=\"0\""));

    let env =
        [("MODE", "flush"), ("TARGET_IP", "192.0.2.1"), ("TARGET_PORT", "8125"), ("LOG_FORMAT", "json")];
    let out = tool::run("/flush-conntrack", &ns, &env, options());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("\"deleted\":1"), "{stderr}");
    assert!(table::list(&ns).is_empty());
    std::fs::remove_dir_all(&empty).unwrap();
}
