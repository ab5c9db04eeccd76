"""The application jobs: photos -> rig and files (`rig`), video -> tracking, retargeting and
videos (`video`), and the choice of rig builder (`builders`)."""
