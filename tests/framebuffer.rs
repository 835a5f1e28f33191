//! The linear framebuffer (Bochs VBE, issue 15): the Mandelbrot demo's PNG decoded by an
//! independent reader (Python's zlib) and compared pixel for pixel with the set computed here;
//! a multiboot kernel that asks for a framebuffer and draws from what the information says; a
//! view following a guest through KVM's dirty log, phase by phase; and the options' errors.

mod common;

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::png::decode_png;
use common::{assert_error, mandelbrot, mini_kvm, require_kvm, scratch, test_guest, test_kernel};
use mini_kvm::config::{GuestImage, RunConfig};
use mini_kvm::console::{GuestInput, GuestIo, GuestOutput};
use mini_kvm::devices::display::{DisplayWatch, View};
use mini_kvm::loader::GuestMode;
use mini_kvm::vmm::group::Group;

fn pixel(rgb: &[u8], width: u32, x: u32, y: u32) -> (u8, u8, u8) {
    let at = ((y * width + x) * 3) as usize;
    (rgb[at], rgb[at + 1], rgb[at + 2])
}

#[test]
fn the_graphics_demo_draws_the_mandelbrot_set_pixel_for_pixel() {
    require_kvm();
    let file = scratch("mandelbrot").join("mandelbrot.png");
    let run = mini_kvm(
        &[
            "run",
            "--stats",
            "--screenshot",
            file.to_str().unwrap(),
            "mandelbrot",
        ],
        b"",
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        run.stdout_text(),
        "mandelbrot: 160x120 points drawn at 320x240, 32 bits per pixel, at 0xe0000000\n"
    );
    // 76,800 pixels drawn, 10 VM exits: 8 `outw`s to the VBE registers and 2 hypercalls.
    assert!(
        run.stderr.contains("VM exits of 'mandelbrot': 10\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("0x01ce out                    4  bochs-vbe"),
        "{}",
        run.stderr
    );
    let (width, height, rgb) = decode_png(&file);
    assert_eq!((width, height), (mandelbrot::WIDTH, mandelbrot::HEIGHT));
    // The top left point, c = -2.25 - 1.125i, escapes after one step: palette colour 1.
    assert_eq!(pixel(&rgb, width, 0, 0), (0x06, 0x2a, 0x8c));
    // c = -0.257 + 0.003i, in the main cardioid: inside the set, black.
    assert_eq!(pixel(&rgb, width, 212, 120), (0, 0, 0));
    // And every other pixel as computed here.
    let wrong = (0..width * height)
        .filter(|i| {
            pixel(&rgb, width, i % width, i / width) != mandelbrot::pixel(i % width, i / width)
        })
        .count();
    assert_eq!(
        wrong, 0,
        "{wrong} pixels differ from the Mandelbrot set computed here"
    );
}

#[test]
fn a_multiboot_kernel_that_asks_for_a_framebuffer_draws_where_it_is_told() {
    require_kvm();
    let file = scratch("framebuffer-kernel").join("kernel.png");
    let kernel = test_kernel("framebuffer");
    let run = mini_kvm(
        &[
            "run",
            "--mem",
            "2M",
            "--screenshot",
            file.to_str().unwrap(),
            kernel.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(
        run.stdout_text(),
        "framebuffer 64x48x32 at 3758096384, pitch 256\n"
    );
    assert_eq!(run.stderr, "");
    let (width, height, rgb) = decode_png(&file);
    assert_eq!((width, height), (64, 48));
    let (red, green, blue) = ((255, 0, 0), (0, 255, 0), (0, 0, 255));
    for (x, y, colour) in [
        (0, 0, red),
        (31, 47, red),
        (32, 0, blue),
        (39, 7, blue),
        (40, 0, green),
        (32, 8, green),
        (63, 47, green),
    ] {
        assert_eq!(pixel(&rgb, width, x, y), colour, "pixel ({x}, {y})");
    }

    // Without a display, the kernel's request cannot be met: said before it runs.
    let run = mini_kvm(&["run", "--mem", "2M", kernel.to_str().unwrap()], b"");
    assert_error(
        &run,
        1,
        "mini-kvm: error: framebuffer.elf is a multiboot kernel mini-kvm cannot boot: it asks for \
         a video mode (header flag 2): run it with a display (--display, --screenshot FILE or \
         --screen-dump FILE)\n",
    );
}

#[test]
fn screenshot_errors() {
    require_kvm();
    let dir = scratch("screenshot-errors");
    let file = dir.join("hello.png");
    // A guest that never leaves text mode: its output is there, and no file is written.
    let run = mini_kvm(
        &["run", "--screenshot", file.to_str().unwrap(), "hello"],
        b"",
    );
    assert_eq!(run.status, 1, "{run:?}");
    assert_eq!(run.stdout_text(), "Hello, KVM!\n");
    assert_eq!(
        run.stderr,
        format!(
            "mini-kvm: error: --screenshot: the guest left the screen in text mode, so nothing \
             was written to {} (--screen-dump FILE writes a text screen)\n",
            file.display()
        )
    );
    assert!(!file.exists());

    let run = mini_kvm(
        &["run", "--screenshot", "/tmp/x.png", "hello", "mandelbrot"],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: --screenshot with 2 guests: the file holds one screen; run the guest \
         alone\n",
    );
    let run = mini_kvm(
        &[
            "run",
            "--screenshot",
            "/nonexistent/dir/x.png",
            "mandelbrot",
        ],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: --screenshot: cannot write /nonexistent/dir/x.png: No such file or \
         directory (os error 2)\n",
    );
    // The text buffer at 0xb8000 must be RAM.
    let run = mini_kvm(
        &[
            "run",
            "--mem",
            "128K",
            "--screenshot",
            "/tmp/x.png",
            "mandelbrot",
        ],
        b"",
    );
    assert_error(
        &run,
        1,
        "mini-kvm: error: a display needs guest RAM up to 0xc0000 (the VGA text buffer is at \
         0xb8000), and this guest has 128 KiB: give it --mem 1M or more\n",
    );
}

/// A writer the test reads back: the guest's output.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<u8>>>);

impl Write for Collected {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Updates `watch` until `done` holds for its view (bounded: a guest stuck fails the test).
fn wait_for_view(watch: &mut DisplayWatch, what: &str, done: impl Fn(&View) -> bool) {
    let started = Instant::now();
    loop {
        watch.update();
        if watch.view().is_some_and(&done) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the view never showed {what}: {:?}",
            watch.view().map(|view| match view {
                View::Text(screen) => screen.dump(),
                View::Graphics(picture) => format!("{}x{} graphics", picture.width, picture.height),
            })
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_view_follows_the_guest_through_the_dirty_log_alone() {
    require_kvm();
    let guest = test_guest("display_phases");
    let mut config = RunConfig::new(vec![GuestImage::resolve(guest.to_str().unwrap()).unwrap()]);
    config.vm.mode = Some(GuestMode::Protected { paging: false });
    config.display = true;
    config.timeout = Some(Duration::from_secs(120));
    let (input, feeder) = GuestInput::fed();
    let output = Collected::default();
    let io = GuestIo {
        output: GuestOutput::to_writer(Box::new(output.clone())),
        input,
    };
    let group = Group::create(&config, vec![io], &|_, _| Ok(None)).unwrap();
    let display = group.displays()[0].clone().expect("a display");
    let mut watch = display.watch();
    // Before the guest runs: a blank text screen, read once; then nothing changes.
    assert!(watch.update());
    assert!(!watch.update());

    std::thread::scope(|scope| {
        let running = scope.spawn(|| {
            group.run(
                config.timeout,
                &AtomicBool::new(false),
                &AtomicBool::new(false),
            )
        });

        // Phase 1: text. The buffer's page is in the text window's log.
        wait_for_view(&mut watch, "phase 1", |view| match view {
            View::Text(screen) => screen.cell(0, 6) == (b'1', 0x1f),
            View::Graphics(_) => false,
        });
        let View::Text(screen) = watch.view().unwrap() else {
            unreachable!()
        };
        let row: Vec<(u8, u8)> = (0..8).map(|column| screen.cell(0, column)).collect();
        let expected: Vec<(u8, u8)> = b"phase 1"
            .iter()
            .map(|&c| (c, 0x1f))
            .chain([(0, 0)])
            .collect();
        assert_eq!(row, expected);
        assert_eq!(watch.pages_copied(), 0, "text is not framebuffer");

        // Phase 2: 64x64 red. The mode switch reads the 4 pages of the screen; pages the guest
        // fills after that come through the log.
        feeder.send(b"\n");
        wait_for_view(&mut watch, "a red 64x64 screen", |view| match view {
            View::Graphics(picture) => {
                (picture.width, picture.height) == (64, 64)
                    && picture.rgb.chunks(3).all(|p| p == [255, 0, 0])
            }
            View::Text(_) => false,
        });
        // (A page written while it was being copied is in the log again: read it once more.)
        watch.update();
        let copied = watch.pages_copied();
        assert!(copied >= 4, "{copied} pages copied for a 4-page screen");
        // The guest waits for input now. Nothing written: nothing read.
        assert!(!watch.update());
        assert_eq!(watch.pages_copied(), copied);

        // Phase 3: one pixel in page 2. Exactly that page is read again.
        feeder.send(b"\n");
        wait_for_view(&mut watch, "the blue pixel", |view| match view {
            View::Graphics(picture) => picture.pixel(0, 32) == (0, 0, 255),
            View::Text(_) => false,
        });
        assert_eq!(watch.pages_copied(), copied + 1);
        let View::Graphics(picture) = watch.view().unwrap() else {
            unreachable!()
        };
        assert_eq!(picture.pixel(0, 31), (255, 0, 0));
        assert_eq!(Some(picture), display.picture().as_ref());

        feeder.send(b"\n");
        let results = running.join().unwrap();
        let report = results[0].report.as_ref().unwrap();
        assert_eq!(report.outcome.exit_code(), 0);
    });
    assert!(output.0.lock().unwrap().is_empty());
}
