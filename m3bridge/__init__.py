"""Operations tooling: the `m3bridge` command and the embedded stack that `make run` starts."""
