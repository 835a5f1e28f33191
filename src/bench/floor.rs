//! The floor: the same real-mode guests run by the least code that can run them, directly on
//! kvm-ioctls. No bus, no devices, no statistics, no registers read: `KVM_RUN`, look at the
//! port, `KVM_RUN` again. What mini-kvm measures against this is the cost of being a VMM.
//!
//! That least code is `examples/minimal.rs`, the example a student reads first: it is included
//! here as it is, so the benchmark's floor and the example cannot drift apart.

use std::io::Write;

use kvm_ioctls::Kvm;

use super::BenchError;

#[path = "../../examples/minimal.rs"]
#[allow(dead_code)] // the example's `main` and its built-in guest are not used here
mod minimal;

pub use minimal::MinimalVm as BareVm;

/// The floor of `mini-kvm bench`'s start-up row: run a real-mode guest, its UART bytes to
/// stdout (the hidden `mini-kvm bench-floor` command, so that both sides pay the same process
/// start).
pub fn run_to_stdout(image: &[u8]) -> Result<(), BenchError> {
    let kvm = Kvm::new().map_err(|source| BenchError::Kvm {
        call: "open /dev/kvm",
        source,
    })?;
    let mut vm = BareVm::new(&kvm, image).map_err(BenchError::Floor)?;
    let mut stdout = std::io::stdout();
    vm.run(&mut stdout).map_err(BenchError::Floor)?;
    let _ = stdout.flush();
    Ok(())
}
