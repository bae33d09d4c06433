fn main() {
    std::process::exit(prism_sync::cli::main());
}
