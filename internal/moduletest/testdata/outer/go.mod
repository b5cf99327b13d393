module example.com/palisade-user

go 1.26.8

require github.com/palisade-project/palisade v0.1.0
