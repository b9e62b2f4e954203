"""The caption stage: `stage` runs the vision-language model over clips; `text` cleans and checks what it wrote."""
