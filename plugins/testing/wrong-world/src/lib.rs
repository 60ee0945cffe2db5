//! A well-formed component that targets some other world. kp must refuse it with a reason.

wit_bindgen::generate!({
    inline: r#"
        package other:thing@1.0.0;
        world calculator {
            export add: func(a: u32, b: u32) -> u32;
        }
    "#,
});

struct Calculator;

impl Guest for Calculator {
    fn add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
}

export!(Calculator);
