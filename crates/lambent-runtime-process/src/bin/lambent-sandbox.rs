//! The sandbox launcher as a program of its own, for embedders of the process
//! runtime that cannot re-execute their own binary (and for this crate's tests).

fn main() {
    let mut args = std::env::args_os().skip(1).peekable();
    if args
        .peek()
        .map(|a| a == lambent_runtime_process::sandbox::PROBE_ARG)
        == Some(true)
    {
        lambent_runtime_process::sandbox::probe_main();
    }
    lambent_runtime_process::sandbox::launcher_main();
}
