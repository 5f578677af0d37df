from .walkthrough import main

raise SystemExit(main())
