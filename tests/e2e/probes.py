"""Scripts the e2e tests run inside an agent's container, as its own interpreter (`-c`)."""

WRITE_PROBE = r"""
import errno, json, os, sys
result = {}
for path in sys.argv[1:]:
    try:
        with open(path, "x") as f:
            f.write("x")
        os.unlink(path)
        result[path] = "ok"
    except OSError as exc:
        result[path] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(result))
"""
"""Try to create (and remove) each path given; prints {path: "ok" or the errno name}."""
