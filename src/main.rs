fn main() {
    // Behave like other Unix tools when the reader of our output goes away (`| head`): end
    // quietly instead of failing to print.
    // SAFETY: setting a signal disposition to its default at start-up, before any threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(prism_sync::cli::main());
}
