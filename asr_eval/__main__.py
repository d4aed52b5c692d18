from asr_eval.cli import main

main()
