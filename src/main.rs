fn main() {
    std::process::exit(bkfs::cli::main());
}
