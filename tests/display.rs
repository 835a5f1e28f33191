//! The VGA text screen (`--screen-dump`): the `vga_text` guest's 80x25 cells, characters and
//! colours, compared cell by cell with what its source writes; and the option's errors.

mod common;

use common::{assert_error, mini_kvm, require_kvm, scratch, test_kernel, vga_text};

#[test]
fn the_text_demo_leaves_its_screen_cell_by_cell() {
    require_kvm();
    let dir = scratch("screen");
    let file = dir.join("screen.txt");
    let run = mini_kvm(
        &["run", "--screen-dump", file.to_str().unwrap(), "vga_text"],
        b"",
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        run.stdout_text(),
        "vga_text: the screen is in the text buffer at 0xb8000\n"
    );
    assert!(run.stderr.is_empty(), "{run:?}");
    let dump = std::fs::read_to_string(&file).unwrap();
    let expected = vga_text::dump();
    // Row by row first, for a readable failure; then the whole file.
    for (number, (got, want)) in dump.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "line {number} of {}", file.display());
    }
    assert_eq!(dump, expected);
}

#[test]
fn a_guest_that_never_touches_the_screen_leaves_it_blank() {
    require_kvm();
    let dir = scratch("screen-blank");
    let file = dir.join("screen.txt");
    let run = mini_kvm(
        &["run", "--screen-dump", file.to_str().unwrap(), "hello"],
        b"",
    );
    assert_eq!(run.status, 0, "{run:?}");
    let dump = std::fs::read_to_string(&file).unwrap();
    // RAM starts zeroed: NUL characters on black, and the cursor at cell 0.
    let mut expected = String::from("VGA text 80x25, cursor at row 0, column 0\n");
    expected.push_str(&"\n".repeat(25));
    expected.push_str("attributes:\n");
    expected.push_str(&format!("{}\n", "00".repeat(80)).repeat(25));
    assert_eq!(dump, expected);
}

#[test]
fn a_kernel_written_like_the_classic_tutorials_shows_its_greeting() {
    require_kvm();
    let dir = scratch("screen-bare-bones");
    let file = dir.join("screen.txt");
    let kernel = test_kernel("vga_bare_bones");
    let run = mini_kvm(
        &[
            "run",
            "--mem",
            "2M",
            "--screen-dump",
            file.to_str().unwrap(),
            kernel.to_str().unwrap(),
        ],
        b"",
    );
    // Its `cli; hlt` ends the run (a second later: mini-kvm has to notice it).
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    let dump = std::fs::read_to_string(&file).unwrap();
    // It never moves the cursor: the CRT controller's registers are still 0.
    let mut expected =
        String::from("VGA text 80x25, cursor at row 0, column 0\nHello, kernel World!\n");
    expected.push_str(&"\n".repeat(24));
    expected.push_str("attributes:\n");
    expected.push_str(&format!("{}\n", "07".repeat(80)).repeat(25));
    assert_eq!(dump, expected);
}

#[test]
fn screen_dump_errors() {
    require_kvm();
    let run = mini_kvm(
        &["run", "--screen-dump", "/tmp/x.txt", "hello", "vga_text"],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: --screen-dump with 2 guests: the file holds one screen; run the guest \
         alone",
    );
    let run = mini_kvm(
        &[
            "run",
            "--screen-dump",
            "/nonexistent/dir/screen.txt",
            "vga_text",
        ],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: --screen-dump: cannot write /nonexistent/dir/screen.txt: No such file \
         or directory (os error 2)",
    );
}

#[test]
fn the_teaching_os_prints_on_the_screen_too() {
    require_kvm();
    let dir = scratch("screen-os");
    let file = dir.join("screen.txt");
    // The menu, "About", the menu again, then exit.
    let run = mini_kvm(
        &["run", "--screen-dump", file.to_str().unwrap(), "os"],
        b"9\n0\n",
    );
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    assert!(stdout.contains("=== 1K OS Menu ==="), "{stdout}");
    // The screen holds the last 25 rows of what the OS printed on its console: its lines, each
    // wrapped at 80 columns (a full row moves to the next), the cursor after the last character.
    assert!(
        stdout
            .bytes()
            .all(|b| b == b'\n' || (0x20..0x7f).contains(&b)),
        "{stdout:?}"
    );
    let rows: Vec<&str> = stdout
        .split('\n')
        .flat_map(|line| {
            let mut rows: Vec<&str> = (0..line.len())
                .step_by(80)
                .map(|at| &line[at..(at + 80).min(line.len())])
                .collect();
            if line.len() % 80 == 0 {
                rows.push("");
            }
            rows
        })
        .collect();
    let shown = &rows[rows.len().saturating_sub(25)..];
    let mut expected = format!(
        "VGA text 80x25, cursor at row {}, column {}\n",
        shown.len() - 1,
        shown[shown.len() - 1].len()
    );
    for row in shown {
        expected.push_str(row.trim_end());
        expected.push('\n');
    }
    expected.push_str(&"\n".repeat(25 - shown.len()));
    expected.push_str("attributes:\n");
    expected.push_str(&format!("{}\n", "07".repeat(80)).repeat(25));
    let dump = std::fs::read_to_string(&file).unwrap();
    assert_eq!(dump, expected);
}
