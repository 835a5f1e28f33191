//! virtio-rng, the entropy device (virtio 1.2 §5.4): the smallest virtio device, and the one to
//! read first. It has one queue and no configuration. The driver puts empty buffers on the queue;
//! the device fills each with random bytes from the host (`getrandom(2)`) and gives it back.

use std::io::Write;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::{DEVICE_ID_RNG, FEATURE_VERSION_1, Served, TurnBudget, VirtioDevice, serve_requests};

/// The most bytes one request gets: a driver asking for more gets this many (the used length
/// says so), and the VMM's buffer stays this small.
const MAX_BYTES_PER_REQUEST: usize = 4096;

#[derive(Default)]
pub struct Rng {
    buffer: Vec<u8>,
}

impl Rng {
    pub fn new() -> Rng {
        Rng {
            buffer: vec![0; MAX_BYTES_PER_REQUEST],
        }
    }
}

/// Fills `buffer` from the host's entropy pool.
fn host_random(buffer: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buffer.len() {
        let rest = &mut buffer[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        filled += got as usize;
    }
    true
}

impl VirtioDevice for Rng {
    fn name(&self) -> &'static str {
        "virtio-rng"
    }

    fn device_id(&self) -> u32 {
        DEVICE_ID_RNG
    }

    fn features(&self) -> u64 {
        FEATURE_VERSION_1
    }

    fn queue_sizes(&self) -> &'static [u16] {
        &[256]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process_queue(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
        budget: &mut TurnBudget,
    ) -> Result<usize, virtio_queue::Error> {
        serve_requests(queue, memory, budget, |chain| {
            // A chain that points outside RAM gets nothing: used length 0.
            let Ok(mut writer) = chain.writer(memory) else {
                return Served::NOTHING;
            };
            let wanted = writer.available_bytes().min(self.buffer.len());
            let bytes = &mut self.buffer[..wanted];
            if host_random(bytes) && writer.write_all(bytes).is_ok() {
                Served {
                    used_len: wanted as u32,
                    bytes_moved: wanted as u64,
                }
            } else {
                Served::NOTHING
            }
        })
    }
}
