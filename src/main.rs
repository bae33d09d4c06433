#![deny(unsafe_code)]

fn main() {
    // Behave like other Unix tools when the reader of our output goes away (`| head`): end
    // quietly instead of failing to print.
    prism_sync::sys::default_sigpipe();
    std::process::exit(prism_sync::cli::main());
}
