//! What one refresh of the display view costs: following KVM's dirty log (what `--display`
//! does, src/devices/display/mod.rs) against reading the whole visible framebuffer again, both
//! measured in the same run on the same guest.
//!
//! `cargo bench --bench display_refresh` runs the `mandelbrot` guest (320x240 pixels of 32 bits:
//! 75 pages of framebuffer) with a display. Every 20 ms while it draws, and then 200 times once
//! it has ended, it times one refresh each way:
//! - **dirty log**: `DisplayWatch::update`, one `KVM_GET_DIRTY_LOG` per slot, then a copy of the
//!   pages it names and the conversion to RGB if any changed;
//! - **full read**: `Display::picture`, a copy of every visible page and the conversion.
//!
//! It prints a table (median and pages read per refresh) and the ratios; nothing is asserted:
//! figures vary by host.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mini_kvm::config::{GuestImage, RunConfig};
use mini_kvm::console::{GuestInput, GuestIo, GuestOutput};
use mini_kvm::vmm::group::Group;

const TICK: Duration = Duration::from_millis(20);
const IDLE_REFRESHES: usize = 200;
/// 320 x 240 x 4 bytes.
const VISIBLE_PAGES: u64 = 75;

#[derive(Default)]
struct Series {
    times: Vec<Duration>,
    pages: u64,
}

impl Series {
    fn median_us(&self) -> f64 {
        let mut times = self.times.clone();
        times.sort();
        times
            .get(times.len() / 2)
            .map_or(0.0, |t| t.as_secs_f64() * 1e6)
    }

    fn pages_per_refresh(&self) -> f64 {
        self.pages as f64 / self.times.len().max(1) as f64
    }
}

fn main() {
    let guest = GuestImage::resolve("mandelbrot").expect("the built-in mandelbrot guest");
    let mut config = RunConfig::new(vec![guest]);
    config.display = true;
    let io = GuestIo {
        output: GuestOutput::to_writer(Box::new(std::io::sink())),
        input: GuestInput::fed().0,
    };
    let group = Group::create(&config, vec![io], &|_, _| Ok(None)).expect("create the VM");
    let display = group.displays()[0].clone().expect("a display");
    let mut watch = display.watch();
    watch.update();

    let (mut drawing_log, mut drawing_full) = (Series::default(), Series::default());
    let (mut idle_log, mut idle_full) = (Series::default(), Series::default());
    let ended = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let running = scope.spawn(|| {
            let results = group.run(None, &AtomicBool::new(false), &AtomicBool::new(false));
            ended.store(true, std::sync::atomic::Ordering::Release);
            results
        });
        let mut refresh = |log: &mut Series, full: &mut Series| {
            let before = watch.pages_copied();
            let started = Instant::now();
            watch.update();
            log.times.push(started.elapsed());
            log.pages += watch.pages_copied() - before;
            let started = Instant::now();
            let picture = display.picture();
            full.times.push(started.elapsed());
            if picture.is_some() {
                full.pages += VISIBLE_PAGES;
            }
        };
        while !ended.load(std::sync::atomic::Ordering::Acquire) {
            refresh(&mut drawing_log, &mut drawing_full);
            std::thread::sleep(TICK);
        }
        running.join().expect("the guest's thread");
        for _ in 0..IDLE_REFRESHES {
            refresh(&mut idle_log, &mut idle_full);
        }
    });

    println!("display refresh: the mandelbrot guest, 320x240x32 ({VISIBLE_PAGES} pages visible)");
    println!(
        "{:<28} {:>10} {:>11} {:>15}",
        "", "refreshes", "median us", "pages/refresh"
    );
    for (label, series) in [
        ("while drawing: dirty log", &drawing_log),
        ("while drawing: full read", &drawing_full),
        ("idle: dirty log", &idle_log),
        ("idle: full read", &idle_full),
    ] {
        println!(
            "{label:<28} {:>10} {:>11.1} {:>15.1}",
            series.times.len(),
            series.median_us(),
            series.pages_per_refresh()
        );
    }
    let ratio = |full: &Series, log: &Series| full.median_us() / log.median_us().max(0.001);
    println!(
        "full read / dirty log: {:.1}x while drawing, {:.1}x idle",
        ratio(&drawing_full, &drawing_log),
        ratio(&idle_full, &idle_log)
    );
}
