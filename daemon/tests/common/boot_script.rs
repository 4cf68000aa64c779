//! The container boot tests' scripts (`os/tests/NAME.sh`, run as root with the binary Cargo
//! built): run one, require its exit status 0 and its last word `NAME: PASS`, return what it
//! printed for the test to check further.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use fiona_tests::fiona_bin;

pub fn run_boot_script(name: &str, envs: &[(&str, &Path)]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../os/tests/{name}.sh"));
    let mut cmd = Command::new("bash");
    cmd.arg(&script).arg(fiona_bin!());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let pass = format!("{name}: PASS");
    assert!(
        out.status.success() && stdout.lines().any(|l| l == pass),
        "{} ({}):\n{stdout}\n{stderr}",
        script.display(),
        out.status
    );
    stdout
}
