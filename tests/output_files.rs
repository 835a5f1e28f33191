//! The files mini-kvm writes for its user (`--screen-dump`, `--screenshot`, `initramfs -o`,
//! `symbols -o`) against another local user who plants a link where one goes, and against a
//! run that fails: each is written as a new file beside its target and renamed over it when
//! complete, never through a link and never truncated in place (docs/security.md).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{is_root, mini_kvm, require_kvm, scratch};

const NOBODY: u32 = 65534;

/// A directory like /tmp: world-writable and sticky, where any user may make names.
fn shared_tmp(test: &str) -> PathBuf {
    let dir = scratch(test);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// Another user (`nobody`, when the tests run as root) makes `link` point to `target`.
fn plant_link(target: &Path, link: &Path) {
    let mut ln = Command::new("ln");
    ln.arg("-s").arg(target).arg(link);
    if is_root() {
        ln.uid(NOBODY).gid(NOBODY);
    }
    assert!(ln.status().unwrap().success(), "ln -s as nobody");
    if is_root() {
        assert_eq!(std::fs::symlink_metadata(link).unwrap().uid(), NOBODY);
    }
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `args` with `{}` replaced by a link another user planted in a shared directory, to a
/// file of the runner's: the file must keep its bytes, the link stay as it was, and mini-kvm
/// say why it wrote nothing.
fn refuses_a_planted_link(test: &str, option: &str, args: &[&str]) {
    let tmp = shared_tmp(test);
    let private = tmp.join("private");
    std::fs::create_dir(&private).unwrap();
    let victim = private.join("victim");
    std::fs::write(&victim, b"root's own file\n").unwrap();
    let link = tmp.join("out");
    plant_link(&victim, &link);

    let link_text = link.to_str().unwrap();
    let args: Vec<&str> = args
        .iter()
        .map(|arg| if *arg == "{}" { link_text } else { arg })
        .collect();
    let run = mini_kvm(&args, b"");
    assert_eq!(run.status, 1, "{args:?}: {run:?}");
    assert!(
        run.stderr.contains(&format!(
            "mini-kvm: error: {option}{link_text} is a symbolic link: mini-kvm does not write \
             through one (give the file it points to, or remove the link)\n"
        )),
        "{args:?}: {run:?}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's own file\n");
    assert_eq!(std::fs::read_link(&link).unwrap(), victim);
    // And nothing else was left in the directory.
    assert_eq!(names_in(&tmp), ["out", "private"], "{args:?}");
}

#[test]
fn a_screen_dump_is_not_written_through_a_link_another_user_planted() {
    require_kvm();
    refuses_a_planted_link(
        "link-screen-dump",
        "--screen-dump: ",
        &["run", "--screen-dump", "{}", "vga_text"],
    );
}

#[test]
fn a_screenshot_is_not_written_through_a_link_another_user_planted() {
    require_kvm();
    refuses_a_planted_link(
        "link-screenshot",
        "--screenshot: ",
        &["run", "--screenshot", "{}", "mandelbrot"],
    );
}

#[test]
fn an_initramfs_is_not_written_through_a_link_another_user_planted() {
    refuses_a_planted_link("link-initramfs", "", &["initramfs", "-o", "{}"]);
}

#[test]
fn symbols_are_not_written_through_a_link_another_user_planted() {
    refuses_a_planted_link("link-symbols", "", &["symbols", "os", "-o", "{}"]);
}

#[test]
fn a_file_is_replaced_by_a_new_one_not_rewritten_in_place() {
    require_kvm();
    let dir = scratch("replaced");
    let file = dir.join("screen.txt");
    std::fs::write(
        &file,
        b"an older screen, longer than the new one will be ".repeat(200),
    )
    .unwrap();
    let old = std::fs::metadata(&file).unwrap();
    // A second name for the old file: rewriting it in place would change what it shows.
    let other_name = dir.join("other-name");
    std::fs::hard_link(&file, &other_name).unwrap();

    let run = mini_kvm(
        &["run", "--screen-dump", file.to_str().unwrap(), "vga_text"],
        b"",
    );
    assert_eq!(run.status, 0, "{run:?}");
    let new = std::fs::metadata(&file).unwrap();
    assert_ne!(new.ino(), old.ino(), "a new file");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("VGA text 80x25, cursor at row")
    );
    assert_eq!(std::fs::read(&other_name).unwrap().len() as u64, old.len());
    // rw-r--r--, less the umask (the tests' is 022 or stricter).
    assert_eq!(new.mode() & 0o7133, 0);
    assert_eq!(names_in(&dir), ["other-name", "screen.txt"]);
}

#[test]
fn a_failed_screenshot_leaves_the_old_file_and_no_empty_one() {
    require_kvm();
    let dir = scratch("failed-screenshot");
    // hello never leaves text mode: there is no picture to write.
    let old = dir.join("old.png");
    std::fs::write(&old, b"yesterday's picture").unwrap();
    for (file, before) in [
        (&old, Some(&b"yesterday's picture"[..])),
        (&dir.join("new.png"), None),
    ] {
        let run = mini_kvm(
            &["run", "--screenshot", file.to_str().unwrap(), "hello"],
            b"",
        );
        assert_eq!(run.status, 1, "{run:?}");
        assert!(
            run.stderr
                .contains("the guest left the screen in text mode"),
            "{run:?}"
        );
        assert_eq!(std::fs::read(file).ok().as_deref(), before);
    }
    assert_eq!(names_in(&dir), ["old.png"]);
}
