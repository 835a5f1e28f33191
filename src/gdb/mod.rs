//! The GDB stub (`--gdb`): gdb's remote serial protocol, spoken by the `gdbstub` crate, over
//! the debugger's controls of a VM (vmm/debug.rs).
//!
//! Each guest gets its own stub, on a thread of its own, listening before the guest starts; the
//! guest waits, stopped before its first instruction, until gdb connects. When gdb detaches,
//! the guest runs on; when it kills the guest, the run ends with status 137; when the guest
//! ends, gdb hears its exit status. docs/gdb.md shows sessions.

mod connection;
mod registers;
mod target;

use std::io::Write;

use gdbstub::stub::{DisconnectReason, GdbStub};
use gdbstub_arch::x86::{X86_64_SSE, X86_SSE};

use self::connection::{GdbConnection, Listener};
use self::registers::X86View;
use self::target::{GuestEventLoop, GuestTarget};
use crate::arch::CpuMode;
use crate::config::GdbAddress;
use crate::vmm::debug::{DebugStub, DebugTarget};
use crate::vmm::seccomp::{self, Role};

/// The longest packet gdb may send (gdb splits memory writes to fit).
const PACKET_BUFFER: usize = 4096;

/// A guest's stub, listening.
pub struct GdbServer {
    listener: Listener,
    /// The guest's symbols are a 64-bit ELF file: gdb gets amd64 registers, whatever mode the
    /// guest starts in (the teaching OS starts in protected mode, as multiboot has it).
    symbols_64bit: bool,
}

impl GdbServer {
    /// Listens at `address` for guest `name`, and says on stderr how to connect (with
    /// `symbols`, the command that writes the guest's symbol file).
    pub fn listen(
        address: &GdbAddress,
        name: &str,
        symbols: Option<(&str, &[u8])>,
    ) -> Result<GdbServer, String> {
        let listener = Listener::bind(address, name)?;
        let target = listener.target();
        let file = match symbols {
            Some((command, _)) => format!(
                " (its symbols: {command} -o {name}.elf, then gdb {name}.elf -ex 'target remote \
                 {target}')"
            ),
            None => String::new(),
        };
        let _ = writeln!(
            crate::console::stderr::stderr(),
            "mini-kvm: guest '{name}' waits for gdb on {target}: gdb -ex 'target remote \
             {target}'{file}"
        );
        if let GdbAddress::Tcp(_) = address {
            let _ = writeln!(
                crate::console::stderr::stderr(),
                "mini-kvm: warning: any user of this machine can connect to {target} and take \
                 over guest '{name}' (its memory, its registers, and what its disks and network \
                 reach); --gdb alone makes a Unix socket only you can use"
            );
        }
        Ok(GdbServer {
            listener,
            symbols_64bit: symbols.is_some_and(|(_, elf)| elf.starts_with(b"\x7fELF\x02")),
        })
    }
}

impl DebugStub for GdbServer {
    fn serve(self: Box<Self>, target: DebugTarget) {
        let control = std::sync::Arc::clone(&target.control);
        let mut listener = self.listener;
        let mut connection = match listener.accept(&control) {
            // The guest ended (--timeout) before gdb came.
            None => return,
            Some(Ok(connection)) => connection,
            Some(Err(error)) => {
                say(
                    &target.name,
                    &format!("cannot accept gdb's connection: {error}"),
                );
                control.detach();
                return;
            }
        };
        // Every vCPU parks before its first instruction, each on its own thread: gdb's first
        // questions (the threads, their registers) wait until they all have, or a secondary
        // CPU still starting would answer "not stopped" (seen under load).
        while !control.is_over()
            && control
                .wait_event(std::time::Duration::from_millis(50))
                .is_none()
        {}
        let wide = self.symbols_64bit || target.widest_mode == CpuMode::Long64;
        // One gdb per guest: the connection keeps the listener to turn the others away.
        connection.start_session(std::sync::Arc::clone(&control), listener, &target.name);
        say(
            &target.name,
            &format!("gdb attached ({})", control.describe_support()),
        );
        if target.seccomp {
            seccomp::install_or_exit(Role::Debugger);
        }
        let ended = if wide {
            serve_as::<X86_64_SSE>(&target, connection)
        } else {
            serve_as::<X86_SSE>(&target, connection)
        };
        match ended {
            // Said before the guest runs on, which may end it at once.
            Ok(DisconnectReason::Disconnect) => {
                say(&target.name, "gdb detached: the guest runs on");
                control.detach();
            }
            Ok(DisconnectReason::Kill) => control.kill(),
            Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {}
            Err(error) => {
                // (A session cut because the guest ended needs no word.)
                if !control.is_over() {
                    say(
                        &target.name,
                        &format!("gdb left without detaching ({error}): the guest runs on"),
                    );
                }
                control.detach();
            }
        }
    }
}

/// Runs gdb's session with register set `A` until gdb leaves or the guest ends.
fn serve_as<A: X86View>(
    target: &DebugTarget,
    connection: GdbConnection,
) -> Result<DisconnectReason, String> {
    let mut guest =
        GuestTarget::<A>::new(std::sync::Arc::clone(&target.control), target.widest_mode);
    // A packet buffer of fixed size: gdbstub's own would grow with a packet that never ends
    // (3 MB to 427 MB in 32 s from a client that sent no '#'). gdb learns the size from
    // qSupported and never sends more; a longer packet ends the session.
    let mut packet_buffer = vec![0u8; PACKET_BUFFER];
    GdbStub::<GuestTarget<A>, GdbConnection>::builder(connection)
        .with_packet_buffer(&mut packet_buffer)
        .build()
        .map_err(|error| error.to_string())?
        .run_blocking::<GuestEventLoop<A>>(&mut guest)
        .map_err(|error| error.to_string())
}

fn say(name: &str, message: &str) {
    let _ = writeln!(
        crate::console::stderr::stderr(),
        "mini-kvm: guest '{name}': {message}"
    );
}
