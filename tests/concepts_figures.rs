//! The figures of the book's "Emulation and hardware" (book/src/concepts.md): a table of what
//! `mini-kvm run --stats` reports for a few built-in guests on two KVMs, side by side: `kvm_pvm`
//! (the software KVM of our development and CI machines) and `kvm_amd` (hardware
//! virtualization, in the hardware-KVM rig, tests/hw-kvm/run).
//!
//! Each row of the table is one guest on one KVM. The test of a column runs each of its guests
//! with `--stats` and rebuilds the row from what mini-kvm printed; the page's row must be that,
//! cell for cell. The `kvm_pvm` rows are checked on a kvm_pvm host (elsewhere that test only
//! says it checked nothing); the `kvm_amd` rows by a test that only the rig runs (`#[ignore]`d
//! here, run with `--include-ignored` there). The rig does not carry the sources: the chapter is
//! compiled into this test (`include_str!`), so a change to the table rebuilds the test.
//!
//! The times `--stats` prints vary from run to run, and the rig's are those of kvm_amd nested
//! inside QEMU's software CPU (TCG), not of hardware: the table leaves them out.

mod common;

use common::{host_kvm_module, mini_kvm, require_kvm};

/// The chapter, as it was when this test was built.
const CONCEPTS: &str = include_str!("../book/src/concepts.md");
const SECTION: &str = "## Emulation and hardware";
/// The table's header row: the columns the test rebuilds, in this order.
const HEADER: [&str; 6] = [
    "Guest",
    "KVM",
    "VM exits",
    "by reason",
    "by port (exits)",
    "coalesced (no exit)",
];

/// The table's rows, each cut into its cells (without the header and the separator row).
fn table() -> Vec<Vec<String>> {
    let start = CONCEPTS
        .find(&format!("\n{SECTION}\n"))
        .unwrap_or_else(|| panic!("book/src/concepts.md has no {SECTION:?} section"));
    let section = &CONCEPTS[start + 1..];
    let section = &section[..section[SECTION.len()..]
        .find("\n## ")
        .map_or(section.len(), |end| end + SECTION.len())];
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect();
    assert!(
        rows.len() > 2,
        "{SECTION} (book/src/concepts.md) has no table"
    );
    assert_eq!(rows[0], HEADER, "{SECTION}: the table's header");
    assert!(
        rows[1]
            .iter()
            .all(|cell| cell.trim_matches([':', '-']).is_empty()),
        "{SECTION}: the row after the header separates it: {:?}",
        rows[1]
    );
    rows[2..].to_vec()
}

/// The table's guests on `module`, each with the page's row.
fn column(module: &str) -> Vec<(String, Vec<String>)> {
    table()
        .into_iter()
        .filter(|row| row[1] == module)
        .map(|row| (row[0].trim_matches('`').to_string(), row))
        .collect()
}

/// Runs `guest` with `--stats` on this host's KVM and writes its row as the page does: the
/// exit total, the reasons, the exits by port and the coalesced writes (`none` for an empty
/// part), each entry as `` `NAME` COUNT ``, entries joined by `, `.
fn measured_row(guest: &str, module: &str) -> Vec<String> {
    let run = mini_kvm(&["run", "--stats", guest], b"");
    assert_eq!(run.status, 0, "{guest}: {run:?}");
    let stats = &run.stderr;
    let mut parts: [Vec<String>; 3] = Default::default();
    let mut part = None;
    for line in stats.lines().skip(2) {
        let text = line.trim_start();
        let heading = ["by reason", "by port", "coalesced (no exit)", "time"]
            .iter()
            .position(|heading| text.starts_with(heading));
        if let Some(heading) = heading {
            part = (heading < 3).then_some(heading);
            continue;
        }
        let Some(part) = part else { continue };
        // "IO_OUT    2", or "0x03f8 out    1  uart": the name, then the count.
        let words: Vec<&str> = text.split_whitespace().collect();
        let (name, count) = if part == 0 {
            (words[0].to_string(), words[1])
        } else {
            (format!("{} {}", words[0], words[1]), words[2])
        };
        parts[part].push(format!("`{name}` {count}"));
    }
    let total = common::total_exits(stats);
    let host = format!("  host KVM: {module} (");
    assert!(
        stats
            .lines()
            .nth(1)
            .is_some_and(|line| line.starts_with(&host)),
        "{guest}: the second line of --stats should name {module}:\n{stats}"
    );
    let mut row = vec![format!("`{guest}`"), module.to_string(), total.to_string()];
    for part in parts {
        row.push(if part.is_empty() {
            "none".to_string()
        } else {
            part.join(", ")
        });
    }
    row
}

/// Checks the rows of `module`, this host's KVM, against real runs.
fn check_column(module: &str) {
    require_kvm();
    assert_eq!(host_kvm_module(), module, "this column is {module}'s");
    let column = column(module);
    assert!(!column.is_empty(), "{SECTION}: no row for {module}");
    let mut wrong = Vec::new();
    for (guest, page) in &column {
        let measured = measured_row(guest, module);
        if &measured != page {
            wrong.push(format!(
                "the page:  | {} |\nmini-kvm: | {} |",
                page.join(" | "),
                measured.join(" | ")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "book/src/concepts.md, {SECTION}: rows that are not what --stats reports on {module}:\n{}",
        wrong.join("\n")
    );
}

/// Each guest has a row for both KVMs, next to each other: the table is a comparison.
#[test]
fn the_table_sets_each_guest_on_kvm_pvm_beside_kvm_amd() {
    let rows = table();
    assert!(
        rows.len().is_multiple_of(2),
        "{SECTION}: rows come in pairs"
    );
    for pair in rows.chunks(2) {
        assert_eq!(
            (pair[0][1].as_str(), pair[1][1].as_str(), &pair[0][0]),
            ("kvm_pvm", "kvm_amd", &pair[1][0]),
            "{SECTION}: each guest's kvm_pvm row, then its kvm_amd row"
        );
        assert!(
            pair.iter().all(|row| row.len() == HEADER.len()),
            "{SECTION}: {pair:?}"
        );
    }
}

/// The kvm_pvm rows: run on a kvm_pvm host, as our development and CI machines are.
#[test]
fn the_kvm_pvm_rows_are_what_stats_reports_here() {
    require_kvm();
    let module = host_kvm_module();
    if module != "kvm_pvm" {
        // The rig (kvm_amd) runs every test; its own rows are the ignored test's below.
        eprintln!("not checked: this host's KVM is {module}, and these rows are kvm_pvm's");
        return;
    }
    check_column("kvm_pvm");
}

/// The kvm_amd rows: only the hardware-KVM rig has that KVM.
#[test]
#[ignore = "needs hardware KVM: run in the rig (tests/hw-kvm/run)"]
fn the_kvm_amd_rows_are_what_stats_reports_in_the_rig() {
    check_column("kvm_amd");
}
