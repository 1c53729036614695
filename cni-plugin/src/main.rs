//! Keelson CNI plugin. Not built yet: see issue 4.

fn main() {
    println!(r#"{{"cniVersion":"1.0.0","code":4,"msg":"keelson CNI plugin is not implemented yet"}}"#);
    std::process::exit(1);
}
