//! `mini-kvm bench --quick`: every row is there and every ratio is a number. This checks the
//! shape of the report, never its figures: timings on these machines are noise, not verdicts.

mod common;

use common::{mini_kvm, require_kvm};

/// The rows every report has (the group, then the start of the measurement's name).
const ROWS: &[(&str, &str)] = &[
    ("exit round trip", "mini-kvm hypercall (CLOCK), per exit"),
    ("start-up", "mini-kvm run hello: first output byte"),
    ("start-up", "mini-kvm run hello: process exit"),
    ("start-up", "mini-kvm run --no-coalesce hello: process exit"),
    ("start-up", "mini-kvm, PVH hello kernel: first output byte"),
    ("start-up", "mini-kvm, PVH hello kernel: process exit"),
    ("memory (peak RSS)", "mini-kvm run hello"),
    ("memory (peak RSS)", "mini-kvm, PVH hello kernel"),
    ("memory (peak RSS)", "mini-kvm run matrix x 32 (32 VMs)"),
    ("VM churn", "create, run, destroy `minimal`"),
    ("scaling (matrix)", "1 at once"),
    ("scaling (matrix)", "2 at once"),
    ("scaling (matrix)", "4 at once"),
    (
        "compute (100 x 8x8 matrix product)",
        "in a mini-kvm guest (time in KVM_RUN)",
    ),
    (
        "compute (100 x 8x8 matrix product)",
        "mini-kvm, PVH matrix kernel (whole process)",
    ),
    ("exits per built-in guest", "hello"),
    ("exits per built-in guest", "matrix"),
    ("virtio-blk", "sequential read in the teaching OS (sum, "),
    ("virtio-blk", "VM exits per disk request"),
    ("virtio-blk", "disk interrupts per request"),
];

#[test]
fn quick_bench_reports_every_row_with_a_ratio() {
    require_kvm();
    // The ratios compare with QEMU: without it they would be missing, and this test would check
    // less than it says. CI installs it (.ci/run), and the rig carries it.
    let qemu = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output();
    assert!(
        qemu.as_ref().is_ok_and(|output| output.status.success()),
        "`mini-kvm bench` compares with QEMU, and qemu-system-x86_64 does not run here \
         ({qemu:?}): install it (Debian: apt-get install qemu-system-x86)"
    );
    let out = std::env::temp_dir().join(format!("mini-kvm-bench-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = mini_kvm(&["bench", "--quick", "--out", out.to_str().unwrap()], b"");
    assert_eq!(run.status, 0, "{run:?}");
    let table = run.stdout_text();

    // The header names the host's KVM module, so nobody takes emulator figures for hardware.
    assert!(table.starts_with("host KVM module: "), "{table}");
    assert!(table.contains("\nQEMU: QEMU emulator version "), "{table}");

    let json = std::fs::read_to_string(out.join("bench.json")).expect("bench.json");
    let markdown = std::fs::read_to_string(out.join("bench.md")).expect("bench.md");
    let svg = std::fs::read_to_string(out.join("bench.svg")).expect("bench.svg");
    assert!(
        svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert!(markdown.starts_with("# mini-kvm bench\n"), "{markdown}");

    // One JSON object per row, on its own line (bench/report.rs writes them so).
    let json_rows: Vec<&str> = json.lines().filter(|l| l.contains("\"group\": ")).collect();
    for (group, name) in ROWS {
        let row = json_rows
            .iter()
            .find(|l| {
                l.contains(&format!("\"group\": \"{group}\""))
                    && l.contains(&format!("\"name\": \"{name}"))
            })
            .unwrap_or_else(|| panic!("no row {group} / {name} in:\n{json}"));
        assert!(
            row.contains("\"median\": "),
            "{group} / {name} has no figure: {row}"
        );
        assert!(
            table.contains(name),
            "{name} missing from the table:\n{table}"
        );
    }
    // Every ratio is a number. QEMU is installed (checked above), so a missing one fails.
    for row in json_rows
        .iter()
        .filter(|l| !l.contains("\"baseline\": null"))
    {
        let ratio = row
            .split("\"ratio\": ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap();
        let value: f64 = ratio
            .parse()
            .unwrap_or_else(|_| panic!("ratio {ratio:?}: {row}"));
        assert!(value.is_finite() && value > 0.0, "{row}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_temporary_directory_that_is_not_utf8_is_an_error_not_a_panic() {
    use std::os::unix::ffi::OsStrExt;
    require_kvm();
    let tmpdir = std::ffi::OsStr::from_bytes(b"/tmp/\xff");
    let run = common::mini_kvm_with(
        common::mini_kvm_command()
            .args(["bench", "--quick"])
            .env("TMPDIR", tmpdir),
        b"",
    );
    common::assert_error(
        &run,
        1,
        "mini-kvm: error: the temporary directory's path is not UTF-8: set TMPDIR to a plain path\n",
    );
}
