fn main() {
    println!("unisondb");
}
