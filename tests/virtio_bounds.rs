//! A hostile guest's virtio requests, end to end: what one doorbell may cost the VMM is
//! bounded, so `--timeout` ends a guest that keeps its disk busy when it says, and a request
//! longer than the device's bound is refused instead of done (docs/security.md). The devices'
//! own tests (src/devices/virtio/tests.rs) count the turns exactly.

mod common;

use common::{mini_kvm, require_kvm, scratch, test_guest};

/// Eight reads of 2 GiB each (indirect tables naming one 32 MiB buffer 64 times) used to be
/// done inline on the event loop, 16 GiB of copying that held off `--timeout`; now each gets
/// IOERR at once. The guest then reads 1 MiB at a time for ever, and `--timeout` stops it
/// with its status and message, a doorbell that keeps ringing notwithstanding.
#[test]
fn reads_of_two_gibibytes_are_refused_and_the_timeout_ends_endless_disk_work() {
    require_kvm();
    let dir = scratch("virtio-huge-requests");
    let image = dir.join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let guest = test_guest("huge_blk_requests");
    let run = mini_kvm(
        &[
            "run",
            "--mode",
            "protected",
            "--mem",
            "64M",
            "--timeout",
            "3",
            "--disk",
            image.to_str().unwrap(),
            guest.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(
        run.stdout_text(),
        "used lengths: 1 1 1 1 1 1 1 1, status 1\n",
        "{run:?}"
    );
    assert_eq!(run.status, 124, "{run:?}");
    assert!(
        run.stderr.contains(
            "mini-kvm: guest 'huge_blk_requests.bin' was still running after 3.0 s (--timeout): \
             stopped"
        ),
        "{run:?}"
    );
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
