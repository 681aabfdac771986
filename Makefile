.PHONY: build run test
build:
	go build -o bin/machi ./cmd/machi
run:
	go run ./cmd/machi serve
test:
	go vet ./...
	go test -count=1 ./...
