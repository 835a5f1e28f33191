//! The fuzz cases of the legacy and platform devices (register accesses only) and of the
//! hypercall handler (random calls through a page table that maps pages at random).

use super::*;

pub(super) fn uart_case(rng: &mut Rng) -> u64 {
    let mut uart = Uart::new(output(), input(rng), IrqLine::disconnected(4));
    pokes(rng, &mut uart, 8, 200)
}

pub(super) fn i8042_case(rng: &mut Rng) -> u64 {
    let mut i8042 = I8042::new(input(rng), IrqLine::disconnected(1));
    // Mostly the data (0) and command (4) ports, whose command sequences have state.
    let mut done = 0;
    for _ in 0..200 {
        if rng.chance(2) {
            let offset = [0, 4][rng.below(2) as usize];
            let value = [rng.value() as u8];
            if rng.chance(3) {
                let mut byte = [0];
                i8042.read(offset, &mut byte);
            } else {
                i8042.write(offset, &value);
            }
        } else {
            poke(rng, &mut i8042, 8);
        }
        done += 1;
    }
    done
}

pub(super) fn fw_cfg_case(rng: &mut Rng) -> u64 {
    let files = (0..rng.below(4))
        .map(|i| {
            let len = rng.below(300) as usize;
            (format!("etc/file{i}"), rng.bytes(len))
        })
        .collect();
    let facts = MachineFacts {
        ram_size: rng.value(),
        cpus: rng.value() as u16,
        cmdline: rng.chance(2).then(|| "console=ttyS0".to_string()),
        files,
        graphics: rng.chance(2),
    };
    let mut fw_cfg = FwCfg::new(&facts);
    let mut done = 0;
    for _ in 0..200 {
        if rng.chance(4) {
            // Select a real item (0x00-0x20 or a file at 0x20..) and read it far past its end.
            let selector = (rng.below(0x28) as u16).to_le_bytes();
            fw_cfg.write(0, &selector);
            let mut bytes = vec![0u8; rng.below(600) as usize];
            for byte in bytes.chunks_mut(1) {
                fw_cfg.read(1, byte);
            }
        } else {
            poke(rng, &mut fw_cfg, 12);
        }
        done += 1;
    }
    done
}

/// The framebuffer is 16 MiB: made once and shared by every VBE case (a mode set clears it).
pub(super) fn framebuffer() -> GuestMemoryMmap {
    static FRAMEBUFFER: OnceLock<GuestMemoryMmap> = OnceLock::new();
    FRAMEBUFFER
        .get_or_init(|| {
            GuestMemoryMmap::from_ranges(&[(
                GuestAddress(FRAMEBUFFER_ADDRESS),
                FRAMEBUFFER_SIZE as usize,
            )])
            .unwrap()
        })
        .clone()
}

pub(super) fn vbe_case(rng: &mut Rng) -> u64 {
    let mode = SharedMode::default();
    let mut vbe = BochsVbe::new(framebuffer(), mode.clone());
    let mut done = 0;
    for _ in 0..200 {
        if rng.chance(2) {
            // An index (0-15, mostly real registers) then a 16-bit value, as a driver writes.
            vbe.write(0, &(rng.below(16) as u16).to_le_bytes());
            let value = match rng.below(3) {
                0 => rng.value() as u16,
                1 => [
                    0, 1, 0x41, 0xc1, 640, 480, 1024, 768, 1920, 1200, 8, 15, 16, 24, 32,
                ][rng.below(15) as usize],
                _ => rng.below(2048) as u16,
            };
            vbe.write(1, &value.to_le_bytes());
        } else {
            poke(rng, &mut vbe, 4);
        }
        done += 1;
    }
    // The mode it reports must fit the framebuffer.
    if let Some(mode) = *mode.lock().unwrap() {
        let end = mode.start + u64::from(mode.pitch) * u64::from(mode.height);
        assert!(
            end <= FRAMEBUFFER_SIZE,
            "mode {mode:?} does not fit the framebuffer"
        );
    }
    done
}

/// The small devices with little state: the debug console, isa-debug-exit, ACPI PM, the CRT
/// controller's cursor registers.
pub(super) fn small_devices_case(rng: &mut Rng) -> u64 {
    let mut devices: Vec<(Box<dyn BusDevice>, u64)> = vec![
        (Box::new(DebugConsole::new(output())), 1),
        (Box::new(DebugExit), 4),
        (Box::new(AcpiPm), 16),
        (
            Box::new(CrtController::new(Arc::new(TextCursor::default()))),
            2,
        ),
    ];
    let mut done = 0;
    for _ in 0..200 {
        let (device, span) = &mut devices[rng.below(4) as usize];
        poke(rng, device.as_mut(), *span);
        done += 1;
    }
    done
}

// The hypercall handler.

/// A page table that maps each page at random, fixed per case: often to RAM, sometimes past
/// its end or to the top of the address space, sometimes not at all.
pub(super) struct RandomPages {
    salt: u64,
    ram: u64,
}

impl PageTables for RandomPages {
    fn translate(&mut self, linear: u64) -> Option<u64> {
        let mut page = Rng::new(self.salt ^ (linear >> 12));
        let offset = linear & 0xfff;
        match page.below(8) {
            0 => None,
            1 => Some(u64::MAX - 0xfff + offset),
            2 => Some((self.ram - 0x1000) + offset),
            3 => Some(linear),
            _ => Some((page.below(self.ram >> 12) << 12) + offset),
        }
    }
}

pub(super) fn hypercall_case(rng: &mut Rng) -> u64 {
    static MEMORY: OnceLock<GuestMemoryMmap> = OnceLock::new();
    let memory = MEMORY
        .get_or_init(|| GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap())
        .clone();
    let mut handler = HypercallHandler::new(memory, output(), input(rng), Instant::now(), None);
    let mut pages = RandomPages {
        salt: rng.next(),
        ram: 0x10_0000,
    };
    let modes = [
        CpuMode::Real,
        CpuMode::Protected16,
        CpuMode::Protected32,
        CpuMode::Long64,
    ];
    for _ in 0..50 {
        let length = |rng: &mut Rng| match rng.below(4) {
            0 => rng.below(64),
            1 => rng.below(0x3000),
            _ => rng.value(),
        };
        let registers = CallRegisters {
            number: if rng.chance(2) {
                rng.below(16) as u8
            } else {
                rng.next() as u8
            },
            args: [rng.value(), length(rng), rng.value()],
            mode: modes[rng.below(4) as usize],
            data_segment_base: if rng.chance(2) { 0 } else { rng.value() },
        };
        let _ = handler.handle(&registers, &mut pages);
    }
    50
}
