//! Small evaluation data written by tests: a BEIR folder and an STS file.

use std::path::Path;

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Eight documents on distinct topics; four queries, each paraphrasing one of them (one judged
/// with two graded documents).
pub fn tiny_beir(dir: &Path) {
    let docs = [
        ("doc-cat", "Cats", "The domestic cat is a small carnivorous mammal kept as a pet."),
        ("doc-rust", "Rust", "Rust is a systems programming language focused on memory safety."),
        ("doc-volcano", "Volcanoes", "A volcano is a rupture in the crust where lava and ash escape."),
        ("doc-bread", "Baking", "Bread is baked from flour, water and yeast in a hot oven."),
        ("doc-moon", "", "The Moon orbits the Earth and causes the ocean tides."),
        ("doc-piano", "Piano", "The piano is a keyboard instrument with hammers striking strings."),
        ("doc-tennis", "Tennis", "Tennis players hit a ball over a net with rackets."),
        ("doc-cheese", "Cheese", "Cheese is made by curdling milk with rennet."),
    ];
    let corpus: String = docs
        .iter()
        .map(|(id, t, x)| serde_json::json!({"_id": id, "title": t, "text": x}).to_string() + "\n")
        .collect();
    write(&dir.join("corpus.jsonl"), &corpus);
    let queries = [
        ("q1", "Which pet is a small meat-eating mammal?"),
        ("q2", "programming language that guarantees memory safety"),
        ("q3", "What makes ocean tides?"),
        ("q4", "how is bread made"),
        ("q5", "a query judged in train only"),
    ];
    let q: String =
        queries.iter().map(|(id, t)| serde_json::json!({"_id": id, "text": t}).to_string() + "\n").collect();
    write(&dir.join("queries.jsonl"), &q);
    write(
        &dir.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\tdoc-cat\t2\nq2\tdoc-rust\t1\nq3\tdoc-moon\t1\nq4\tdoc-bread\t2\nq4\tdoc-cheese\t1\n",
    );
    write(&dir.join("qrels/train.tsv"), "query-id\tcorpus-id\tscore\nq5\tdoc-tennis\t1\n");
}

pub fn tiny_sts(path: &Path) {
    let pairs = [
        ("A man is playing a guitar.", "A man plays the guitar.", 5.0),
        ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.6),
        ("A dog runs in the park.", "A dog is running on the grass.", 3.8),
        ("A child is reading a book.", "A child is writing a letter.", 2.0),
        ("A plane is taking off.", "The stock market fell sharply today.", 0.0),
        ("Kids play football outside.", "Quantum computers use qubits.", 0.2),
    ];
    let text: String = pairs
        .iter()
        .enumerate()
        .map(|(i, (a, b, s))| format!("main-captions\tMSRvid\t2012test\t{i:04}\t{s:.3}\t{a}\t{b}\n"))
        .collect();
    write(path, &text);
}
