//! Link flags for the two programs: each has its own linker script (where it lives in memory),
//! and neither links the C library or start-up files.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for (bin, script) in [("kernel", "kernel.ld"), ("user", "user.ld")] {
        println!("cargo:rustc-link-arg-bin={bin}=-T{dir}/{script}");
        println!("cargo:rerun-if-changed={script}");
    }
    for flag in [
        "-nostdlib",
        "-static",
        "-Wl,--build-id=none",
        "-Wl,-z,max-page-size=4096",
    ] {
        println!("cargo:rustc-link-arg={flag}");
    }
    // The kernel embeds the user programs' ELF file (src/kernel/process.rs).
    println!("cargo:rerun-if-env-changed=MINI_OS_USER_ELF");
}
