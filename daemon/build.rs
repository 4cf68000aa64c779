//! The build's time for the selftest's clock check (`selftest::BUILD_EPOCH`): the clock of a
//! box may not be before the fiona it runs was built. `SOURCE_DATE_EPOCH` when the build sets
//! it (reproducible builds, the OS image), else the time this script ran.

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=FIONA_BUILD_EPOCH={epoch}");
}
