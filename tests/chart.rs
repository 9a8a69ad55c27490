#[test]
fn probe() {
    use std::sync::Arc;
    let env = Arc::new(cel::Env::stdlib());
    let obj = serde_json::json!({"metadata": {"name": "x", "annotations": {"a/b": " FALSE "}}});
    let req = serde_json::json!({"operation": "DELETE", "userInfo": {}, "options": {"kind": "DeleteOptions"}});
    for e in [
        "object != null",
        "oldObject != null",
        "oldObject == null",
        "has(object.metadata.annotations)",
        "has(oldObject.metadata)",
        "false && has(oldObject.metadata)",
        "has(oldObject.metadata) && false",
        "has(request.userInfo.username)",
        "(has(request.userInfo.username) ? request.userInfo.username : \"\").matches(\"^(?s:.*)$\")",
        "has(request.options) && has(request.options.fieldManager)",
        "\"a/b\" in object.metadata.annotations && object.metadata.annotations[\"a/b\"].matches(\"^[\\t\\n\\u000b\\f\\r ]*[fF][aA][lL][sS][eE][\\t\\n\\u000b\\f\\r ]*$\")",
        "// comment\ntrue\n// c2\n|| false",
        "request.nope",
        "has(request.subResource) && request.subResource == \"scale\"",
        "[\"a\"].exists(g, g.matches(\"^(?s:a)$\"))",
        "\"x\\ny\".matches(\"^(?s:x.y)$\")",
        "\"x\\ny\".matches(\"^x.y$\")",
        "\"\\u003c\" == \"<\"",
    ] {
        let p = env.compile(e);
        let mut ctx = cel::Context::with_env(env.clone());
        ctx.add_variable("object", &obj).unwrap();
        ctx.add_variable("oldObject", serde_json::Value::Null).unwrap();
        ctx.add_variable("request", &req).unwrap();
        match p {
            Ok(p) => println!("{e:?} => {:?}", p.execute(&ctx)),
            Err(err) => println!("{e:?} => PARSE {err}"),
        }
    }
}
