fn main() {
    std::process::exit(ptytile::cli::main());
}
