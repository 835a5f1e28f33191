//! mini-kvm: a small, readable x86 virtual machine monitor on the Linux KVM API.
//!
//! Data flows one way (the README's "A tour of the code" has a row per file):
//! [`config`] → [`loader`] → [`vmm`] (memory, [`arch`] state, [`devices`]) → vCPU run loop →
//! port bus → device → [`console`].

pub mod arch;
pub mod bench;
pub mod config;
pub mod console;
pub mod devices;
pub mod gdb;
pub mod loader;
pub mod output_file;
pub mod terminal;
pub mod tui;
pub mod vmm;

use std::sync::atomic::AtomicBool;

use config::RunConfig;
use console::{GuestInput, GuestIo, GuestOutput, LineLabel, SharedSink};
use vmm::group::{Group, GuestResult};
use vmm::vm::VmError;

/// The consoles of a run whose guests share one output `sink` (stdout): whole lines labelled
/// with their guest when several guests run (unless `--raw`); `input` goes to the input guest,
/// the others see end of input at once.
pub fn shared_consoles(config: &RunConfig, sink: SharedSink, input: GuestInput) -> Vec<GuestIo> {
    config
        .guests
        .iter()
        .enumerate()
        .map(|(index, guest)| {
            let label = config
                .labelled()
                .then(|| LineLabel::for_guest(index, &guest.name(), config.colour));
            // Only the guest that reads stdin may put the terminal in raw mode, when its
            // keyboard takes the input (src/terminal.rs).
            let input = if index == config.input_guest {
                let input = input.clone();
                if config.terminal {
                    input.on_keyboard_claimed(|| {
                        terminal::enter_raw_mode();
                    });
                }
                input
            } else {
                GuestInput::none()
            };
            GuestIo {
                output: GuestOutput::to_sink(sink.clone(), label),
                input,
            }
        })
        .collect()
}

/// Runs every guest of `config`, each in its own VM, all at once, to their end. `cancel` stops
/// the guests still running.
pub fn run_guests(
    config: &RunConfig,
    consoles: Vec<GuestIo>,
    cancel: &AtomicBool,
) -> Result<Vec<GuestResult>, VmError> {
    let debugger = |index: usize, name: &str| gdb_stub(config, index, name);
    let group = Group::create(config, consoles, &debugger)?;
    Ok(group.run(config.timeout, cancel, terminal::quit_flag()))
}

/// `--gdb`: guest `index`'s GDB stub, listening (src/gdb/); `None` without `--gdb`.
/// `mini-kvm restore DIR`: builds the guest a snapshot saved (vmm/snapshot/) and runs it on to
/// its end, its console on `io`. A bad snapshot is an error before any guest code runs.
pub fn restore_guest(
    dir: &std::path::Path,
    vm: &config::VmConfig,
    timeout: Option<std::time::Duration>,
    io: GuestIo,
    cancel: &AtomicBool,
) -> Result<GuestResult, VmError> {
    let saved = vmm::snapshot::load(dir)?;
    let kvm = vmm::kvm::shared_kvm()?;
    let guest = vmm::vm::Vm::restore(kvm, vm, dir, &saved, io)?;
    Ok(GuestResult {
        name: guest.name().to_string(),
        report: guest.run(timeout, cancel, terminal::quit_flag()),
    })
}

fn gdb_stub(
    config: &RunConfig,
    index: usize,
    name: &str,
) -> Result<Option<Box<dyn vmm::debug::DebugStub>>, String> {
    let Some(address) = &config.gdb else {
        return Ok(None);
    };
    let address = address
        .for_guest(index, config.guests.len())
        .map_err(|error| error.to_string())?;
    // A built-in guest with a symbol file: say how to get it.
    let symbols = match &config.guests[index] {
        config::GuestImage::Builtin(guest) => guest
            .symbols
            .map(|elf| (format!("mini-kvm symbols {}", guest.name), elf)),
        _ => None,
    };
    let symbols = symbols
        .as_ref()
        .map(|(command, elf)| (command.as_str(), *elf));
    let server = gdb::GdbServer::listen(&address, name, symbols)?;
    Ok(Some(Box::new(server)))
}
